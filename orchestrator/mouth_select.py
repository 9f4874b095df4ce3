"""Which library frame's mouth to show at every output frame: a Viterbi search over the
person's own mouth library (`mouth_library.py`), as Video Rewrite (Bregler, Covell & Slaney,
SIGGRAPH 1997) stitches recorded segments: close to the target shape, consecutive library
frames preferred (their motion is real), jumps paid for by how visible they are, and small
head-pose differences to the frame the mouth is pasted on, so the warp stays small."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.mouth_library import CLOSURE, JAW, LIP_OPEN, N_PARAMS, MouthLibrary

# jaw, lip_open, lip_width, lip_round, closure, teeth, tongue, activity
DEFAULT_SHAPE_WEIGHTS = (1.0, 3.0, 0.5, 0.5, 1.0, 0.3, 0.1, 0.0)
CHUNK_ELEMENTS = 1 << 20  # output frames x library frames costed at once (memory flat in video length)
# A shown mouth narrower than the target is opened wider by the generator (its
# reference_opening): not at all up to WIDEN_FROM short (lip_open units), by the whole
# shortfall from WIDEN_FULL on, smoothly in between (no jump as the target outgrows the library).
WIDEN_FROM = 0.08
WIDEN_FULL = 0.16
# The speaking-style match keeps at least a share of the target's opening and jaw for a calm
# speaker (a video that barely opens the mouth), so the dub still opens for open vowels: up to
# CALM_STYLE_SHARE for a library that never opens, none for one whose 95th percentile of each
# column reaches EXPRESSIVE_P95 (parameter units; most talking videos do).
CALM_STYLE_SHARE = 0.8
EXPRESSIVE_P95 = 0.4


@dataclass(frozen=True)
class SelectionWeights:
    shape: tuple[float, ...] = DEFAULT_SHAPE_WEIGHTS
    pose: float = 1.0  # per rad^2 of yaw/pitch/roll difference
    hold: float = 0.012  # showing the same library frame again (a frozen mouth)
    skip: float = 0.012  # skipping one library frame (playing 2x for a frame)
    jump: float = 0.04  # any other transition, plus the shape discontinuity below
    continuity: float = 1.0  # x shape distance from the mouth on screen (or the run's next one) to the jump's target
    candidates: int = 24  # K best library frames per output frame (plus the runs' successors)
    max_pose_step_rad: float = np.radians(4.0)  # consecutive library frames farther apart are a cut
    # The library has no such mouth when the chosen one misses the target's opening or jaw
    # by more than these (parameter units), or shows open lips where the target closes them.
    fallback_open: float = 0.15
    fallback_jaw: float = 0.25


@dataclass(frozen=True)
class MouthSelection:
    frames: np.ndarray  # int64 [T]: library (= source) frame whose mouth is shown
    fallback: np.ndarray  # bool [T]: no close enough mouth in the library; use the parametric generator
    shape_cost: np.ndarray  # float32 [T]: weighted squared distance of the chosen mouth to the target


def _node_costs(library: MouthLibrary, target: np.ndarray, order: np.ndarray, w: SelectionWeights,
                usable: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-K library frames per output frame by shape + pose cost: (indices, node cost, shape cost)."""
    weights = np.asarray(w.shape, np.float32)
    lib = library.params[usable]
    lib_pose = library.pose[usable]
    lib_index = np.flatnonzero(usable)
    k = min(w.candidates, lib.shape[0])
    n_out = target.shape[0]
    indices = np.empty((n_out, k), np.int64)
    node = np.empty((n_out, k), np.float32)
    shape = np.empty((n_out, k), np.float32)
    sw = np.sqrt(weights)
    lib_w = lib * sw
    chunk = max(1, CHUNK_ELEMENTS // lib.shape[0])
    for start in range(0, n_out, chunk):
        stop = min(n_out, start + chunk)
        tw = target[start:stop] * sw
        shape_all = (tw**2).sum(1)[:, None] + (lib_w**2).sum(1)[None, :] - 2.0 * tw @ lib_w.T
        shape_all = np.maximum(shape_all, 0.0)
        total = shape_all + pose_cost(library.pose[order[start:stop]][:, None, :], lib_pose[None, :, :], w)
        part = np.argpartition(total, k - 1, axis=1)[:, :k]
        rows = np.arange(stop - start)[:, None]
        indices[start:stop] = lib_index[part]
        node[start:stop] = total[rows, part]
        shape[start:stop] = shape_all[rows, part]
    return indices, node, shape


# ---- the cost terms of the search (node: how a mouth fits the frame; transition: how it follows)

def shape_cost(a: np.ndarray, b: np.ndarray, w: SelectionWeights) -> np.ndarray:
    """Weighted squared distance of mouth parameter rows (broadcast over leading axes)."""
    return (((a - b) ** 2) * np.asarray(w.shape, np.float32)).sum(-1)


def pose_cost(a: np.ndarray, b: np.ndarray, w: SelectionWeights) -> np.ndarray:
    """Head-pose difference (yaw, pitch, roll, rad^2) between the library frame and the frame it is pasted on."""
    return ((a - b) ** 2).sum(-1) * w.pose


def _node_cost(params: np.ndarray, target_row: np.ndarray, pose: np.ndarray, target_pose: np.ndarray,
               w: SelectionWeights) -> tuple[np.ndarray, np.ndarray]:
    """(node cost, shape cost) of library rows for one output frame."""
    shape = shape_cost(params, target_row, w)
    return shape + pose_cost(pose, target_pose, w), shape


def continuity_cost(params: np.ndarray, successor: np.ndarray, prev: np.ndarray, cur: np.ndarray,
                    w: SelectionWeights) -> np.ndarray:
    """[P, C]: a jump is invisible when the new mouth looks like the one on screen or like
    the one the interrupted run would have shown next."""
    return w.continuity * np.minimum(shape_cost(params[successor[prev]][:, None, :], params[cur][None, :, :], w),
                                     shape_cost(params[prev][:, None, :], params[cur][None, :, :], w))


def jump_cost(params: np.ndarray, successor: np.ndarray, prev: np.ndarray, cur: np.ndarray,
              w: SelectionWeights) -> np.ndarray:
    """[P, C]: any transition that is not a hold, a play-on or a skip."""
    return w.jump + continuity_cost(params, successor, prev, cur, w)


def transition_cost(params: np.ndarray, successor: np.ndarray, next_ok: np.ndarray, prev: np.ndarray,
                    cur: np.ndarray, w: SelectionWeights) -> np.ndarray:
    """[P, C] cost of showing library frame cur[j] after prev[i]: free when the run plays
    on (the next frame of the recording), `hold` when the same frame is shown again, `skip`
    when one frame of the run is skipped, else `jump_cost`."""
    delta = cur[None, :] - prev[:, None]
    plays_on = next_ok[prev][:, None]
    skips_ok = plays_on & next_ok[np.minimum(prev + 1, next_ok.size - 1)][:, None]
    trans = np.where(delta == 0, w.hold, jump_cost(params, successor, prev, cur, w))
    trans = np.where((delta == 1) & plays_on, 0.0, trans)
    return np.where((delta == 2) & skips_ok, w.skip, trans)


def select_mouths(library: MouthLibrary, target_params: np.ndarray, order: np.ndarray,
                  weights: SelectionWeights | None = None) -> MouthSelection:
    """Library frame per output frame for `target_params` [T, 8] shown on source frames `order` [T].

    Viterbi over K pruned candidates per output frame; each frame's candidates are its K best
    shapes plus the successors of the previous frame's candidates, so runs can continue.
    """
    w = weights or SelectionWeights()
    target = np.asarray(target_params, np.float32).reshape(-1, N_PARAMS)
    order = np.clip(np.asarray(order, np.int64).reshape(-1), 0, library.count - 1)
    if order.shape[0] != target.shape[0]:
        raise ValueError(f"order has {order.shape[0]} frames, target_params {target.shape[0]}")
    n_out = target.shape[0]
    usable = library.usable.copy()
    if n_out == 0 or not usable.any():
        return MouthSelection(np.zeros(n_out, np.int64), np.ones(n_out, bool), np.full(n_out, np.inf, np.float32))
    top, top_node, top_shape = _node_costs(library, target, order, w, usable)

    # Consecutive library frames form a run when both are usable and the head did not jump.
    pose_step = np.zeros(library.count, np.float32)
    pose_step[:-1] = np.abs(np.diff(library.pose, axis=0)).max(1)
    next_ok = usable & np.roll(usable, -1) & (pose_step < w.max_pose_step_rad)
    next_ok[-1] = False
    successor = np.where(next_ok, np.arange(library.count) + 1, np.arange(library.count))
    params, pose = library.params, library.pose

    cands: list[np.ndarray] = [top[0]]
    shapes: list[np.ndarray] = [top_shape[0]]
    score = top_node[0].astype(np.float64)
    back: list[np.ndarray] = []
    for t in range(1, n_out):
        prev = cands[-1]
        extra = np.unique(successor[prev[np.argsort(score)[: w.candidates // 2]]])
        extra = extra[~np.isin(extra, top[t])]
        cur = np.concatenate([top[t], extra])
        extra_node, extra_shape = _node_cost(params[extra], target[t], pose[extra], pose[order[t]], w)
        node = np.concatenate([top_node[t], extra_node])
        total = score[:, None] + transition_cost(params, successor, next_ok, prev, cur, w)
        arg = total.argmin(0)
        score = total[arg, np.arange(cur.size)] + node
        back.append(arg)
        cands.append(cur)
        shapes.append(np.concatenate([top_shape[t], extra_shape]))

    chosen = np.empty(n_out, np.int64)
    cost = np.empty(n_out, np.float32)
    j = int(np.argmin(score))
    for t in range(n_out - 1, -1, -1):
        chosen[t], cost[t] = cands[t][j], shapes[t][j]
        if t > 0:
            j = int(back[t - 1][j])
    missing = _misses(params[chosen], target, w)
    # Where the smoothest path misses the shape but the library has it, show the library's
    # closest mouth (a jump between two of the person's own mouths) rather than switching to
    # the parametric generator for a frame or two.
    best = top[:, 0]
    swap = missing & ~_misses(params[best], target, w)
    chosen[swap] = best[swap]
    cost[swap] = top_shape[swap, 0]
    return MouthSelection(frames=chosen, fallback=_fallback_runs(missing & ~swap), shape_cost=cost)


def _misses(got: np.ndarray, target: np.ndarray, w: SelectionWeights) -> np.ndarray:
    """[T] bool: the shown mouth misses the target's opening or jaw, or is open where the target closes."""
    return ((np.abs(got[:, LIP_OPEN] - target[:, LIP_OPEN]) > w.fallback_open)
            | (np.abs(got[:, JAW] - target[:, JAW]) > w.fallback_jaw)
            | closure_misses(got, target))


def _fallback_runs(flag: np.ndarray, bridge: int = 2) -> np.ndarray:
    """Close gaps of up to `bridge` frames between fallback frames: no one-frame flicker
    between the transplanted and the parametric mouth."""
    out = flag.copy()
    idx = np.flatnonzero(flag)
    for a, b in zip(idx[:-1], idx[1:], strict=True):
        if 1 < b - a <= bridge + 1:
            out[a:b] = True
    return out


def closure_misses(got: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[T] bool: the shown mouth is open where the target closes the lips (no opening helps)."""
    return (target[:, CLOSURE] > 0.5) & (got[:, LIP_OPEN] > 0.1)


def widen_selection(library: MouthLibrary, target_params: np.ndarray, selection: MouthSelection,
                    start: float = WIDEN_FROM, full: float = WIDEN_FULL,
                    weights: SelectionWeights | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Where the chosen mouths are narrower than the target, open them wider instead of
    falling back to the parametric generator: (fallback bool [T], left only where the shown
    mouth is too open, which no opening helps: the target closes lips the library shows
    open, or opens them less by more than `fallback_open`; extra lip opening float32 [T] in
    parameter units: the target's opening minus the shown one's, faded in between `start`
    and `full` of shortfall, 0 on fallback frames)."""
    w = weights or SelectionWeights()
    target = np.asarray(target_params, np.float32).reshape(-1, N_PARAMS)
    got = library.params[selection.frames]
    too_open = closure_misses(got, target) | (got[:, LIP_OPEN] - target[:, LIP_OPEN] > w.fallback_open)
    fallback = _fallback_runs(selection.fallback & too_open)
    short = np.maximum(target[:, LIP_OPEN] - got[:, LIP_OPEN], 0.0)
    ramp = np.clip((short - start) / max(full - start, 1e-6), 0.0, 1.0)
    extra = short * ramp * ramp * (3.0 - 2.0 * ramp)
    extra[fallback] = 0.0
    return fallback, extra.astype(np.float32)


def calm_share(library_column: np.ndarray, share: float = CALM_STYLE_SHARE, expressive: float = EXPRESSIVE_P95) -> float:
    """The share of the target a calm library keeps (0 for an expressive one)."""
    p95 = float(np.percentile(library_column, 95)) if library_column.size else 0.0
    return share * float(np.clip(1.0 - p95 / expressive, 0.0, 1.0))


def match_speaking_style(target_params: np.ndarray, library: MouthLibrary, strength: float = 1.0,
                         floor: float | None = None) -> np.ndarray:
    """Map the target's jaw/opening distribution onto the library's (quantile matching):
    a person who speaks with a small mouth keeps doing so, instead of falling back; but never
    below `floor` times the target (by default `calm_share` of the library's column), so a
    calm speaker's dub still opens for open vowels (the generator opens the mouths wider)."""
    target = np.asarray(target_params, np.float32).copy()
    lib = library.params[library.usable]
    if lib.shape[0] < 8:
        return target
    qs = np.linspace(0.0, 1.0, 21)
    for col in (JAW, LIP_OPEN):
        src = np.quantile(target[:, col], qs)
        dst = np.quantile(lib[:, col], qs)
        if np.ptp(src) < 1e-6:
            continue
        share = calm_share(lib[:, col]) if floor is None else floor
        mapped = np.maximum(np.interp(target[:, col], np.maximum.accumulate(src), dst), share * target[:, col])
        target[:, col] = (1 - strength) * target[:, col] + strength * mapped
    target[:, CLOSURE] = np.where(target[:, LIP_OPEN] > 0.1, 0.0, target[:, CLOSURE])
    return target
