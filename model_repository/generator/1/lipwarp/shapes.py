"""Target landmark shapes from the source mesh and absolute mouth/motion parameters.

A small articulatory model in the face frame (units: inter-ocular distance): the inner lip gap
is set absolutely (the source's own gap is measured first, so an open source mouth can be
closed), the lower lip and mandible follow a jaw drop that fades towards the jaw angles, the
corners move for spread/rounding, lids close for blinks, and the whole head translates and
rolls about the neck. The result is a set of control-point pairs (target position -> source
position to sample) for the backward warp field of `field.py`. What depends only on the
source face is measured once (`MouthRig`); a batch of frames is then a few array operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipwarp import landmarks as ix
from lipwarp.graphspec import UPPER_SHARE  # share of a gap change taken by the upper lip
from lipwarp.landmarks import FaceFrame, face_frame

MAX_GAP_IOD = 0.42  # inner-lip gap of a wide-open "ah", in IODs
MIN_SEP_PX = 1.2  # target inner lips never coincide: coincident controls make the TPS singular
EXACT_GAP_IOD = 0.06  # below this target gap the lips' source edges slide to the seam (see below)
HAIR_RING_SCALE = 1.35


MOUTH_LOW = np.array([0, 0, -1, 0, 0, 0, 0, 0.0])  # mouth_params columns' lower bounds (upper: 1)
JAW_OPEN, LIP_OPEN, LIP_WIDTH, LIP_ROUND, CLOSURE, TEETH, TONGUE, ACTIVITY = range(8)
BLINK, HEAD_DX, HEAD_DY, HEAD_ROLL = range(4)
MOTION_LOW = np.array([0, -0.3, -0.3, -0.5])  # motion columns' bounds
MOTION_HIGH = np.array([1, 0.3, 0.3, 0.5])


def mouth_rows(rows: np.ndarray) -> np.ndarray:
    """[T, 8] mouth parameters as float64, NaN-free and clipped to their ranges."""
    v = np.nan_to_num(np.asarray(rows, dtype=np.float64).reshape(-1, 8))
    return np.clip(v, MOUTH_LOW, 1.0)


def motion_rows(rows: np.ndarray) -> np.ndarray:
    """[T, 4] blink, head dx, head dy (face lengths), roll (radians), NaN-free and clipped."""
    v = np.nan_to_num(np.asarray(rows, dtype=np.float64).reshape(-1, 4))
    return np.clip(v, MOTION_LOW, MOTION_HIGH)


@dataclass(frozen=True)
class TargetShapes:
    """Control-point pairs and inner lips of T frames."""

    target_px: np.ndarray  # [T, K, 2] control points in the rendered crop
    source_px: np.ndarray  # [T, K, 2] where each control point samples the source crop
    inner_upper_px: np.ndarray  # [T, 11, 2] target inner upper lip, corner to corner
    inner_lower_px: np.ndarray  # [T, 11, 2] target inner lower lip


@dataclass(frozen=True)
class SourceShape:
    """Everything about the control points that depends only on the source (computed once)."""

    src: np.ndarray  # [468, 2] source landmarks, pixels
    frame: FaceFrame
    q: np.ndarray  # [468, 2] landmarks in the face frame
    ring: np.ndarray  # [R, 2] hair ring outside the face oval
    neck: np.ndarray  # [N, 2] points below the jaw
    border: np.ndarray  # [16, 2] fixed crop border
    pivot: np.ndarray  # [2] head roll pivot (below the chin)
    face_px: float  # forehead-to-chin length (head translation unit)
    rig: MouthRig


def _smoothstep(x: np.ndarray | float) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


_UP, _LO = np.array(ix.INNER_UPPER), np.array(ix.INNER_LOWER)
_O_UP, _O_LO = np.array(ix.OUTER_UPPER), np.array(ix.OUTER_LOWER)
_LIPS = np.array(sorted(set(ix.INNER_UPPER + ix.INNER_LOWER + ix.OUTER_UPPER + ix.OUTER_LOWER)))
_LOWER_FACE = np.array(ix.LOWER_FACE)
_JAW_AND_LOWER = np.array(ix.JAW + ix.LOWER_FACE)


def _interp_matrix(x: np.ndarray, xp: np.ndarray) -> np.ndarray:
    """[len(x), len(xp)]: M @ fp == np.interp(x, xp, fp) for any fp (interp is linear in fp)."""
    return np.stack([np.interp(x, xp, basis) for basis in np.eye(len(xp))], axis=1)


@dataclass(frozen=True)
class MouthRig:
    """What the articulatory model needs of one source face, in the face frame (IODs):
    measured once, so a batch of frames is a few array operations."""

    q: np.ndarray  # [468, 2] landmarks in the face frame
    profile_base: np.ndarray  # [11] 1 - u^2 at the inner upper lip's stations
    gap_s: np.ndarray  # [11] the source's inner-lip gap at each station
    rest: np.ndarray  # [11] where the lips meet when this mouth closes
    outer_upper: np.ndarray  # [11, 11] inner-lip values -> the outer upper lip's stations
    outer_lower: np.ndarray  # [11, 11] and the outer lower lip's
    thick_upper: np.ndarray  # [11] upper lip thickness at the outer upper stations
    thick_lower: np.ndarray  # [11] lower lip thickness at the outer lower stations
    bulge_upper: np.ndarray  # [11] pout profile along the outer lips
    bulge_lower: np.ndarray
    u_lips: np.ndarray  # [L] station of every lip point
    jaw_weight: np.ndarray  # [J] share of the chin drop each jaw/lower-face point takes
    pull: np.ndarray  # [F, 1] how much each lower-face point follows its nearest lip point
    nearest: np.ndarray  # [F] that lip point (index into _LIPS)


def mouth_rig(q: np.ndarray) -> MouthRig:
    corner_l, corner_r = q[78], q[308]
    center = (corner_l + corner_r) / 2
    half_w = max(abs(corner_r[0] - corner_l[0]) / 2, 1e-3)
    u = np.clip((q[:, 0] - center[0]) / half_w, -1.3, 1.3)
    gap_s = np.maximum(q[_LO, 1] - q[_UP, 1], 0.0)
    station = u[_UP]
    thick_u = np.abs(np.interp(station, u[_O_UP], q[_O_UP, 1]) - q[_UP, 1])
    thick_l = np.abs(q[_LO, 1] - np.interp(station, u[_O_LO], q[_O_LO, 1]))
    bulge = np.clip(1 - u * u, 0, 1)
    others = _JAW_AND_LOWER
    on_jaw = _smoothstep((q[others, 1] - (center[1] - 0.05)) / 0.3)
    lateral = np.clip(1 - (q[others, 0] / 0.95) ** 2, 0, 1)
    # skin near the mouth is dragged along by the nearest lip point (Gaussian falloff)
    dist = np.linalg.norm(q[_LOWER_FACE][:, None, :] - q[_LIPS][None, :, :], axis=2)
    nearest = np.argmin(dist, axis=1)
    pull = np.exp(-((dist[np.arange(len(nearest)), nearest] / 0.16) ** 2))[:, None]
    return MouthRig(
        q=q, profile_base=np.clip(1.0 - station * station, 0.0, 1.0), gap_s=gap_s,
        rest=q[_UP, 1] + UPPER_SHARE * gap_s,
        outer_upper=_interp_matrix(u[_O_UP], station), outer_lower=_interp_matrix(u[_O_LO], station),
        thick_upper=np.interp(u[_O_UP], station, thick_u), thick_lower=np.interp(u[_O_LO], station, thick_l),
        bulge_upper=bulge[_O_UP], bulge_lower=bulge[_O_LO], u_lips=u[_LIPS],
        jaw_weight=on_jaw * lateral, pull=pull, nearest=nearest)


def _mouth_moves(rig: MouthRig, p: np.ndarray, iod_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Face-frame displacements [T, 468, 2] of all points for mouth parameters p [T, 8], plus
    the points' source sample positions [T, 468, 2] (the inner lips' differ)."""
    up, lo, q = _UP, _LO, rig.q
    jaw, lip_open, width, lip_round, closure = (p[:, i : i + 1] for i in (JAW_OPEN, LIP_OPEN, LIP_WIDTH, LIP_ROUND, CLOSURE))
    frames = p.shape[0]

    # 1. gaps: measured at the source, set absolutely for the target
    opening = (0.8 * lip_open + 0.2 * jaw * lip_open ** 0.5) * (1.0 - closure)
    # opening height along the mouth: a lens for spread lips, close to an ellipse when rounded
    gap_t = MAX_GAP_IOD * opening * rig.profile_base ** (0.75 - 0.3 * lip_round)
    gap_t[:, [0, -1]] = 0.0
    sep_t = np.maximum(gap_t, MIN_SEP_PX / iod_px)
    sep_t[:, [0, -1]] = 0.0
    # closing over an open source: the sampled lip edges slide to the seam as the target gap
    # vanishes, so lip body plus (lip-filled) source gap are squeezed smoothly, never torn
    exact = _smoothstep(gap_t / EXACT_GAP_IOD)
    sep_s = np.where(rig.gap_s > sep_t, sep_t + (rig.gap_s - sep_t) * exact, rig.gap_s)

    d = np.zeros((frames,) + q.shape)
    d[:, up, 1] = (rig.rest - UPPER_SHARE * sep_t) - q[up, 1]
    d[:, lo, 1] = (rig.rest + (1 - UPPER_SHARE) * sep_t) - q[lo, 1]

    # 2. outer lips follow the inner lips at the same station along the mouth; pressed lips
    # roll in (look thinner), rounded lips pout a little (outer contour grows)
    d[:, _O_UP, 1] = (0.9 * d[:, up, 1] @ rig.outer_upper.T + 0.25 * closure * rig.thick_upper
                      - 0.015 * lip_round * rig.bulge_upper)
    d[:, _O_LO, 1] = (d[:, lo, 1] @ rig.outer_lower.T - 0.25 * closure * rig.thick_lower
                      + 0.015 * lip_round * rig.bulge_lower)

    # 3. width: corners out for spread, in for rounding; the lips scale about the centre
    spread = np.maximum(width, 0.0)
    corner_dx = 0.08 * width - 0.07 * lip_round - 0.03 * lip_open * (1 - spread)
    d[:, _LIPS, 0] += rig.u_lips * corner_dx
    d[:, _LIPS, 1] -= 0.03 * spread * rig.u_lips**2

    # 4. mandible: drops with the lower lip, fading towards the jaw angles
    chin_drop = 0.9 * d[:, 14, 1:2]
    d[:, _JAW_AND_LOWER, 1] += chin_drop * rig.jaw_weight
    d[:, _LOWER_FACE] = (1 - rig.pull) * d[:, _LOWER_FACE] + rig.pull * d[:, _LIPS[rig.nearest]]
    source = np.repeat(q[None], frames, axis=0)
    source[:, up, 1] = rig.rest - UPPER_SHARE * sep_s
    source[:, lo, 1] = rig.rest + (1 - UPPER_SHARE) * sep_s
    return d, source


def move_with_head(points: np.ndarray, source: SourceShape, motion: np.ndarray) -> np.ndarray:
    """Points [..., P, 2] of each of T frames (motion [T, 4]; points with or without a
    leading T axis) rolled about a pivot below the chin, then translated (in face lengths):
    [T, P, 2]."""
    roll = motion[:, HEAD_ROLL, None]
    c, s = np.cos(roll), np.sin(roll)
    rel = points - source.pivot
    x = c * rel[..., 0] - s * rel[..., 1] + source.pivot[0] + motion[:, HEAD_DX, None] * source.face_px
    y = s * rel[..., 0] + c * rel[..., 1] + source.pivot[1] + motion[:, HEAD_DY, None] * source.face_px
    return np.stack([x, y], axis=-1)


def _control_ids() -> list[int]:
    lips = ix.INNER_UPPER + ix.INNER_LOWER + ix.OUTER_UPPER + ix.OUTER_LOWER
    pinned = ix.EYE_ANCHORS + ix.BROWS + ix.NOSE + ix.UPPER_FACE + ix.UPPER_OVAL[::2]
    return sorted(set(lips + ix.JAW[::2] + (ix.JAW[-1],) + ix.LOWER_FACE + pinned))


CONTROL_IDS = tuple(_control_ids())


def _border(side_px: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, 5)[:-1] * side_px
    s, z = float(side_px), np.zeros(4)
    return np.concatenate([np.stack([t, z], 1), np.stack([np.full(4, s), t], 1),
                           np.stack([s - t, np.full(4, s)], 1), np.stack([z, s - t], 1)])


def source_shape(src_landmarks: np.ndarray, side_px: int) -> SourceShape:
    src = np.asarray(src_landmarks, dtype=np.float64)[:, :2]
    frame = face_frame(src)
    # hair moves with the head: a ring outside the face oval; the neck below the jaw stays
    margin = 0.1 * side_px
    oval = src[list(ix.FACE_OVAL[::3])]
    centre = oval.mean(axis=0)
    ring = np.clip(centre + HAIR_RING_SCALE * (oval - centre), margin, side_px - margin)
    jaw = src[list(ix.JAW[3:16:3])]
    neck = np.clip(jaw + 0.45 * frame.iod_px * frame.axis_y, margin, side_px - margin)
    q = frame.to_face(src)
    return SourceShape(src=src, frame=frame, q=q, ring=ring, neck=neck, border=_border(side_px),
                       pivot=src[ix.CHIN] + 0.35 * frame.iod_px * frame.axis_y,
                       face_px=float(np.linalg.norm(src[10] - src[ix.CHIN])), rig=mouth_rig(q))


def target_shapes(source: SourceShape, mouth: np.ndarray, motion: np.ndarray) -> TargetShapes:
    """Control-point pairs for T frames (mouth_rows [T, 8], motion_rows [T, 4]): moved
    lips/jaw/head, pinned eyes/nose, fixed border."""
    src, frame, frames = source.src, source.frame, mouth.shape[0]
    d_face, sample_face = _mouth_moves(source.rig, mouth, frame.iod_px)
    target = src + frame.vector_to_px(d_face)
    sample = src + frame.vector_to_px(sample_face - source.q)
    ids, lips = list(CONTROL_IDS), list(ix.INNER_UPPER + ix.INNER_LOWER)
    ring = np.broadcast_to(source.ring, (frames,) + source.ring.shape)
    head_t = move_with_head(np.concatenate([target[:, ids], ring], axis=1), source, motion)
    neck_t = source.neck + 0.4 * (move_with_head(source.neck, source, motion) - source.neck)
    lips_t = move_with_head(target[:, lips], source, motion)
    fixed = np.concatenate([source.ring, source.neck, source.border])
    border = np.broadcast_to(source.border, (frames,) + source.border.shape)
    return TargetShapes(
        target_px=np.concatenate([head_t, neck_t, border], axis=1),
        source_px=np.concatenate([sample[:, ids], np.broadcast_to(fixed, (frames,) + fixed.shape)], axis=1),
        inner_upper_px=lips_t[:, :len(ix.INNER_UPPER)],
        inner_lower_px=lips_t[:, len(ix.INNER_UPPER):],
    )
