"""Target landmark shapes from the source mesh and absolute mouth/motion parameters.

A small articulatory model in the face frame (units: inter-ocular distance): the inner lip gap
is set absolutely (the source's own gap is measured first, so an open source mouth can be
closed), the lower lip and mandible follow a jaw drop that fades towards the jaw angles, the
corners move for spread/rounding, lids close for blinks, and the whole head translates and
rolls about the neck. The result is a set of control-point pairs (target position -> source
position to sample) for the backward warp field of `field.py`.
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


@dataclass(frozen=True)
class MouthParams:
    jaw_open: float
    lip_open: float
    lip_width: float
    lip_round: float
    closure: float
    teeth: float
    tongue: float
    activity: float

    @classmethod
    def from_row(cls, row: np.ndarray) -> "MouthParams":
        v = np.nan_to_num(np.asarray(row, dtype=np.float64).reshape(8))
        lo = np.array([0, 0, -1, 0, 0, 0, 0, 0.0])
        return cls(*(float(x) for x in np.clip(v, lo, 1.0)))


@dataclass(frozen=True)
class Motion:
    blink: float
    head_dx: float
    head_dy: float
    head_roll_rad: float

    @classmethod
    def from_row(cls, row: np.ndarray) -> "Motion":
        v = np.nan_to_num(np.asarray(row, dtype=np.float64).reshape(4))
        return cls(float(np.clip(v[0], 0, 1)), float(np.clip(v[1], -0.3, 0.3)),
                   float(np.clip(v[2], -0.3, 0.3)), float(np.clip(v[3], -0.5, 0.5)))


@dataclass(frozen=True)
class TargetShape:
    target_px: np.ndarray  # [K, 2] control points in the rendered crop
    source_px: np.ndarray  # [K, 2] where each control point samples the source crop
    inner_upper_px: np.ndarray  # [11, 2] target inner upper lip, corner to corner
    inner_lower_px: np.ndarray  # [11, 2] target inner lower lip
    frame: FaceFrame  # source face frame


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


def _smoothstep(x: np.ndarray | float) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gap_profile(u: np.ndarray, lip_round: float) -> np.ndarray:
    """Opening height along the mouth: a lens for spread lips, close to an ellipse when rounded."""
    base = np.clip(1.0 - u * u, 0.0, 1.0)
    return base ** (0.75 - 0.3 * lip_round)


_UP, _LO = np.array(ix.INNER_UPPER), np.array(ix.INNER_LOWER)
_O_UP, _O_LO = np.array(ix.OUTER_UPPER), np.array(ix.OUTER_LOWER)
_LIPS = np.array(sorted(set(ix.INNER_UPPER + ix.INNER_LOWER + ix.OUTER_UPPER + ix.OUTER_LOWER)))
_LOWER_FACE = np.array(ix.LOWER_FACE)
_JAW_AND_LOWER = np.array(ix.JAW + ix.LOWER_FACE)


def _mouth_moves(q: np.ndarray, p: MouthParams, frame: FaceFrame) -> tuple[np.ndarray, np.ndarray]:
    """Face-frame displacements of all 468 points, plus inner-lip source sample points."""
    up, lo = _UP, _LO
    corner_l, corner_r = q[78], q[308]
    center = (corner_l + corner_r) / 2
    half_w = max(abs(corner_r[0] - corner_l[0]) / 2, 1e-3)
    u = np.clip((q[:, 0] - center[0]) / half_w, -1.3, 1.3)

    # 1. gaps: measured at the source, set absolutely for the target
    gap_s = np.maximum(q[lo, 1] - q[up, 1], 0.0)
    rest = q[up, 1] + UPPER_SHARE * gap_s  # where the lips meet when this mouth closes
    opening = (0.8 * p.lip_open + 0.2 * p.jaw_open * p.lip_open ** 0.5) * (1.0 - p.closure)
    gap_t = MAX_GAP_IOD * opening * _gap_profile(u[up], p.lip_round)
    gap_t[[0, -1]] = 0.0
    sep_t = np.maximum(gap_t, MIN_SEP_PX / frame.iod_px)
    sep_t[[0, -1]] = 0.0
    # closing over an open source: the sampled lip edges slide to the seam as the target gap
    # vanishes, so lip body plus (lip-filled) source gap are squeezed smoothly, never torn
    exact = _smoothstep(gap_t / EXACT_GAP_IOD)
    sep_s = np.where(gap_s > sep_t, sep_t + (gap_s - sep_t) * exact, gap_s)

    d = np.zeros_like(q)
    d[up, 1] = (rest - UPPER_SHARE * sep_t) - q[up, 1]
    d[lo, 1] = (rest + (1 - UPPER_SHARE) * sep_t) - q[lo, 1]

    # 2. outer lips follow the inner lips at the same station along the mouth; pressed lips
    # roll in (look thinner), rounded lips pout a little (outer contour grows)
    station = u[up]
    thick_u = np.abs(np.interp(station, u[_O_UP], q[_O_UP, 1]) - q[up, 1])
    thick_l = np.abs(q[lo, 1] - np.interp(station, u[_O_LO], q[_O_LO, 1]))
    bulge = np.clip(1 - u * u, 0, 1)
    d[_O_UP, 1] = (0.9 * np.interp(u[_O_UP], station, d[up, 1])
                   + 0.25 * p.closure * np.interp(u[_O_UP], station, thick_u) - 0.015 * p.lip_round * bulge[_O_UP])
    d[_O_LO, 1] = (np.interp(u[_O_LO], station, d[lo, 1])
                   - 0.25 * p.closure * np.interp(u[_O_LO], station, thick_l) + 0.015 * p.lip_round * bulge[_O_LO])

    # 3. width: corners out for spread, in for rounding; the lips scale about the centre
    corner_dx = 0.08 * p.lip_width - 0.07 * p.lip_round - 0.03 * p.lip_open * (1 - max(p.lip_width, 0))
    d[_LIPS, 0] += u[_LIPS] * corner_dx
    d[_LIPS, 1] -= 0.03 * max(p.lip_width, 0.0) * u[_LIPS] ** 2

    # 4. mandible: drops with the lower lip, fading towards the jaw angles
    chin_drop = 0.9 * float(d[14, 1])
    others = _JAW_AND_LOWER
    on_jaw = _smoothstep((q[others, 1] - (center[1] - 0.05)) / 0.3)
    lateral = np.clip(1 - (q[others, 0] / 0.95) ** 2, 0, 1)
    d[others, 1] += chin_drop * on_jaw * lateral
    # skin near the mouth is dragged along by the nearest lip point (Gaussian falloff)
    dist = np.linalg.norm(q[_LOWER_FACE][:, None, :] - q[_LIPS][None, :, :], axis=2)
    nearest = np.argmin(dist, axis=1)
    pull = np.exp(-((dist[np.arange(len(nearest)), nearest] / 0.16) ** 2))[:, None]
    d[_LOWER_FACE] = (1 - pull) * d[_LOWER_FACE] + pull * d[_LIPS[nearest]]
    source = q.copy()
    source[up, 1] = rest - UPPER_SHARE * sep_s
    source[lo, 1] = rest + (1 - UPPER_SHARE) * sep_s
    return d, source


def move_with_head(points: np.ndarray, source: SourceShape, m: Motion) -> np.ndarray:
    """Roll about a pivot below the chin, then translate (in face lengths)."""
    c, s = np.cos(m.head_roll_rad), np.sin(m.head_roll_rad)
    rel = points - source.pivot
    rolled = np.stack([c * rel[..., 0] - s * rel[..., 1], s * rel[..., 0] + c * rel[..., 1]], axis=-1) + source.pivot
    return rolled + np.array([m.head_dx, m.head_dy]) * source.face_px


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
    return SourceShape(src=src, frame=frame, q=frame.to_face(src), ring=ring, neck=neck, border=_border(side_px),
                       pivot=src[ix.CHIN] + 0.35 * frame.iod_px * frame.axis_y,
                       face_px=float(np.linalg.norm(src[10] - src[ix.CHIN])))


def target_shape(source: SourceShape, mouth: MouthParams, motion: Motion) -> TargetShape:
    """Control-point pairs for one frame: moved lips/jaw/head, pinned eyes/nose, fixed border."""
    src, frame, q = source.src, source.frame, source.q
    d_face, sample_face = _mouth_moves(q, mouth, frame)
    target = src + frame.vector_to_px(d_face)
    sample = src + frame.vector_to_px(sample_face - q)
    ids = list(CONTROL_IDS)
    head_t = move_with_head(np.concatenate([target[ids], source.ring]), source, motion)
    neck_t = source.neck + 0.4 * (move_with_head(source.neck, source, motion) - source.neck)
    lips = move_with_head(np.concatenate([target[list(ix.INNER_UPPER)], target[list(ix.INNER_LOWER)]]), source, motion)
    return TargetShape(
        target_px=np.concatenate([head_t, neck_t, source.border]),
        source_px=np.concatenate([sample[ids], source.ring, source.neck, source.border]),
        inner_upper_px=lips[:len(ix.INNER_UPPER)],
        inner_lower_px=lips[len(ix.INNER_UPPER):],
        frame=frame,
    )
