"""Opening a recorded mouth wider than it is: control points for the warp field that part the
lips by an extra gap (in inter-ocular distances) while everything else samples the source
where it is, so the recorded interior is stretched and only the part the warp uncovers needs
the synthesized interior.

The lips part along the same lens profile as the parametric mouth (`shapes.py`): the upper
lip takes UPPER_SHARE of the extra gap, the lower lip the rest, the outer lips and the
mandible follow as they do there. With an extra gap of 0 every control point stays put.
"""

from __future__ import annotations

import numpy as np

from lipwarp import landmarks as ix
from lipwarp.graphspec import UPPER_SHARE
from lipwarp.shapes import CONTROL_IDS, MouthRig, SourceShape, TargetShapes

MAX_EXTRA_GAP_IOD = 0.35  # the most a recorded mouth is opened (a wide "ah" is ~0.42 IOD in all)
PROFILE_POWER = 0.75  # opening height along the mouth: the parametric mouth's lens for unrounded lips
CHIN_SHARE = 0.9  # of the lower lip's drop taken by the chin (as in shapes.py)

# the point sets of shapes.py's rig, in the same order
_UP, _LO = np.array(ix.INNER_UPPER), np.array(ix.INNER_LOWER)
_O_UP, _O_LO = np.array(ix.OUTER_UPPER), np.array(ix.OUTER_LOWER)
_LIPS = np.array(sorted(set(ix.INNER_UPPER + ix.INNER_LOWER + ix.OUTER_UPPER + ix.OUTER_LOWER)))
_LOWER_FACE = np.array(ix.LOWER_FACE)
_JAW_AND_LOWER = np.array(ix.JAW + ix.LOWER_FACE)


def opening_moves(rig: MouthRig, extra_gap_iod: np.ndarray) -> np.ndarray:
    """Face-frame displacements [T, 468, 2] that open the mouth by extra_gap_iod [T] more."""
    extra = np.clip(np.asarray(extra_gap_iod, np.float64).reshape(-1, 1), 0.0, MAX_EXTRA_GAP_IOD)
    sep = extra * rig.profile_base ** PROFILE_POWER
    sep[:, [0, -1]] = 0.0
    d = np.zeros((extra.shape[0],) + rig.q.shape)
    d[:, _UP, 1] = -UPPER_SHARE * sep
    d[:, _LO, 1] = (1.0 - UPPER_SHARE) * sep
    d[:, _O_UP, 1] = 0.9 * d[:, _UP, 1] @ rig.outer_upper.T
    d[:, _O_LO, 1] = d[:, _LO, 1] @ rig.outer_lower.T
    d[:, _JAW_AND_LOWER, 1] += CHIN_SHARE * d[:, 14, 1:2] * rig.jaw_weight
    d[:, _LOWER_FACE] = (1 - rig.pull) * d[:, _LOWER_FACE] + rig.pull * d[:, _LIPS[rig.nearest]]
    return d


def opened_shapes(source: SourceShape, extra_gap_iod: np.ndarray) -> tuple[TargetShapes, np.ndarray]:
    """Control-point pairs of T opened mouths (every point samples the source where it is)
    and where all 468 landmarks of each opened mouth are ([T, 468, 2], crop pixels)."""
    moved = source.src + source.frame.vector_to_px(opening_moves(source.rig, extra_gap_iod))
    frames = moved.shape[0]
    ids = list(CONTROL_IDS)
    fixed = np.concatenate([source.ring, source.neck, source.border])
    fixed_t = np.broadcast_to(fixed, (frames,) + fixed.shape)
    shapes = TargetShapes(
        target_px=np.concatenate([moved[:, ids], fixed_t], axis=1),
        source_px=np.concatenate([np.broadcast_to(source.src[ids], (frames, len(ids), 2)), fixed_t], axis=1),
        inner_upper_px=moved[:, list(ix.INNER_UPPER)],
        inner_lower_px=moved[:, list(ix.INNER_LOWER)],
    )
    return shapes, moved


def uncovered_share(source_gap_px: float, opened_gap_px: np.ndarray) -> np.ndarray:
    """[T] share of each opened gap (at the middle of the mouth) that the recording does not
    show: the synthesized interior's strength there (0 with no extra opening)."""
    opened = np.asarray(opened_gap_px, np.float64)
    return np.clip(1.0 - max(source_gap_px, 0.0) / np.maximum(opened, 1e-6), 0.0, 1.0)
