"""Temporal stability of the face outside the mouth: RMS of the second temporal difference
of eye, brow and nose landmarks (frame-to-frame acceleration, which flicker and jitter
inflate and smooth head motion barely does), in units of the face scale."""
from __future__ import annotations

import numpy as np

from tests.eval.sync import face_scale

STABLE_POINTS = (33, 133, 159, 145, 263, 362, 386, 374,  # eyes
                 70, 105, 107, 336, 334, 300,  # brows
                 1, 4, 6, 168, 197, 98, 327)  # nose


def landmark_jitter(landmarks: np.ndarray) -> float:
    """RMS over points and frames of |x[t+1] - 2 x[t] + x[t-1]| / face scale, using only
    runs of three consecutive frames with a face; 0 for a static track."""
    if landmarks.shape[0] < 3:
        return float("nan")
    points = landmarks[:, list(STABLE_POINTS), :2].astype(np.float64)
    scale = np.nanmedian(face_scale(landmarks))
    second = points[2:] - 2 * points[1:-1] + points[:-2]
    valid = np.isfinite(second).all(axis=(1, 2))
    if not valid.any() or not np.isfinite(scale) or scale <= 0:
        return float("nan")
    magnitude = np.linalg.norm(second[valid], axis=-1) / scale
    return float(np.sqrt(np.mean(magnitude**2)))
