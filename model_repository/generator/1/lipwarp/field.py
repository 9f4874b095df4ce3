"""Thin-plate-spline backward displacement field (Bookstein 1989, "Principal warps").

The control points are target positions; their values are the offsets to the source pixels
they show. The weights come from a small dense solve here; the field itself is evaluated on
a coarse grid inside the ONNX graph (`build.py`) and upsampled, then fed to GridSample.
Coordinates are normalised by the crop side so the system is well conditioned at any size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipwarp.graphspec import KERNEL_FLOOR

REGULARISATION = 1e-7  # tiny smoothing: keeps the solve stable when controls crowd together


@dataclass(frozen=True)
class SplineField:
    """One field, or a batch of T fields with a leading T axis on every array."""

    centres: np.ndarray  # float32 [(T,) K, 2], normalised by the crop side
    weights: np.ndarray  # float32 [(T,) K, 2], pixels
    affine: np.ndarray  # float32 [(T,) 3, 2], pixels: rows for 1, x, y

    def augmented(self) -> np.ndarray:
        """[(T,) 4, K] rows -2x, -2y, 1, |c|^2: squared distances as one matmul in the graph."""
        c = self.centres.astype(np.float64)
        rows = [-2 * c[..., 0], -2 * c[..., 1], np.ones(c.shape[:-1]), (c * c).sum(-1)]
        return np.stack(rows, axis=-2).astype(np.float32)


def tps_kernel(d2: np.ndarray) -> np.ndarray:
    d2 = np.maximum(d2, KERNEL_FLOOR)
    return d2 * np.log(d2)


def fit_fields(target_px: np.ndarray, source_px: np.ndarray, side_px: int) -> SplineField:
    """Solve T splines at once, each interpolating `source - target` at its target points [T, K, 2]."""
    c = np.asarray(target_px, dtype=np.float64) / side_px
    values = np.asarray(source_px, dtype=np.float64) - np.asarray(target_px, dtype=np.float64)
    frames, n = c.shape[:2]
    sq = (c * c).sum(-1)
    system = np.zeros((frames, n + 3, n + 3))
    system[:, :n, :n] = tps_kernel(sq[:, :, None] + sq[:, None, :] - 2.0 * (c @ c.transpose(0, 2, 1)))
    system[:, np.arange(n), np.arange(n)] = REGULARISATION
    system[:, :n, n] = system[:, n, :n] = 1.0
    system[:, :n, n + 1:] = c
    system[:, n + 1:, :n] = c.transpose(0, 2, 1)
    rhs = np.zeros((frames, n + 3, 2))
    rhs[:, :n] = values
    solution = np.linalg.solve(system, rhs)
    return SplineField(c.astype(np.float32), solution[:, :n].astype(np.float32), solution[:, n:].astype(np.float32))


def fit_field(target_px: np.ndarray, source_px: np.ndarray, side_px: int) -> SplineField:
    """Solve the TPS interpolating `source - target` at the target points [K, 2]."""
    batch = fit_fields(np.asarray(target_px)[None], np.asarray(source_px)[None], side_px)
    return SplineField(batch.centres[0], batch.weights[0], batch.affine[0])


def evaluate_field(field: SplineField, points_px: np.ndarray, side_px: int) -> np.ndarray:
    """Reference evaluation in numpy (tests and the coarse-grid check)."""
    x = np.asarray(points_px, dtype=np.float64) / side_px
    d2 = ((x[:, None, :] - field.centres[None].astype(np.float64)) ** 2).sum(-1)
    p = np.concatenate([np.ones((x.shape[0], 1)), x], axis=1)
    return tps_kernel(d2) @ field.weights + p @ field.affine
