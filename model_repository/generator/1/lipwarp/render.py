"""`Renderer`: source crops + landmarks + per-frame mouth/motion parameters -> frames and masks.

Per frame, numpy computes the target shape (`shapes.py`), solves the thin-plate spline
(`field.py`) and prepares the mouth layers (`interior.py`); the ONNX graph built by
`build.py` does all pixel work (fill, field evaluation, GridSample warp, interior, mask).
Usable without Triton; `model.py` is a thin adapter around it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lipwarp import graphspec as spec
from lipwarp.field import fit_field
from lipwarp.interior import FacePalette, MouthLayer, face_palette, interior_vector, lid_feeds, mouth_fill_feeds, mouth_layer
from lipwarp.shapes import MouthParams, Motion, target_shape

log = logging.getLogger(__name__)

MIN_SIDE_PX, MAX_SIDE_PX = 64, 1024


@dataclass(frozen=True)
class GridConstants:
    grid_aug: np.ndarray
    grid_window: np.ndarray
    coarse_shape: np.ndarray
    base_grid: np.ndarray
    grid_scale: np.ndarray


def grid_constants(side_px: int) -> GridConstants:
    # face-relative resolution: ~4 px cells at S=256, never more than MAX_COARSE_CELLS a side
    cells = min(spec.MAX_COARSE_CELLS, int(np.ceil(side_px / spec.COARSE_STEP_PX)))
    centres = (np.arange(cells) + 0.5) * side_px / cells / side_px  # normalised
    gx, gy = np.meshgrid(centres, centres)
    edge = np.minimum(np.minimum(gx, 1 - gx), np.minimum(gy, 1 - gy))
    t = np.clip((edge - spec.WINDOW_START) / (spec.WINDOW_END - spec.WINDOW_START), 0, 1)
    window = t * t * (3 - 2 * t)
    pix = (np.arange(side_px) + 0.5) * 2.0 / side_px - 1.0
    bx, by = np.meshgrid(pix, pix)
    return GridConstants(
        grid_aug=np.stack([gx.ravel(), gy.ravel(), gx.ravel() ** 2 + gy.ravel() ** 2, np.ones(gx.size)], 1).astype(np.float32),
        grid_window=window[None, None].astype(np.float32),
        coarse_shape=np.array([1, cells, cells, 2], dtype=np.int64),
        base_grid=np.stack([bx, by], -1)[None].astype(np.float32),
        grid_scale=np.full((1, 2, 1, 1), 2.0 / side_px, dtype=np.float32),
    )


def _mask_ellipse(layer: MouthLayer, strength: float, side_px: int, reach: tuple[float, float]) -> np.ndarray:
    """[7]: centre, inverse axes (normalised) and strength of a soft ellipse around a layer."""
    aff = layer.affine.astype(np.float64)
    axis = aff[0, :2] * layer.half_width_px
    perp = aff[1, :2]
    y0, x0 = float(layer.roi[0]), float(layer.roi[1])
    # the centre is where u = v = 0: solve the affine for the absolute position
    local = np.linalg.solve(np.stack([aff[0, :2], aff[1, :2]]), -aff[:, 2])
    centre = (local + np.array([x0, y0])) / side_px
    a, b = reach[0] * layer.half_width_px / side_px, reach[1] * layer.half_width_px / side_px
    m = np.stack([axis / a, perp / b])
    return np.array([*centre, *m.ravel(), strength], dtype=np.float32)


def _idle_band(name: str) -> dict[str, np.ndarray]:
    return {f"{name}_roi": np.array([0, 0, 2, 2], dtype=np.int64), f"{name}_affine": np.zeros((2, 3), np.float32),
            f"{name}_curves": np.zeros((2, 1 + 3 * spec.CURVE_SEGMENTS), np.float32),
            f"{name}_params": np.zeros(len(spec.BAND_PARAMS), np.float32), f"{name}_colours": np.zeros((3, 3), np.float32)}


_IDLE_LIDS = {**_idle_band("lid_r"), **_idle_band("lid_l")}


class Renderer:
    """Runs the generator graph frame by frame; identical inputs give identical outputs."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = Path(model_dir) / spec.GRAPH_FILE
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._grids: dict[int, GridConstants] = {}

    def _grid(self, side_px: int) -> GridConstants:
        if side_px not in self._grids:
            self._grids[side_px] = grid_constants(side_px)
        return self._grids[side_px]

    def render(self, sources: np.ndarray, landmarks: np.ndarray, mouth_params: np.ndarray,
               motion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """sources [N,S,S,3] uint8, landmarks [N,468,3], mouth_params [T,8], motion [T,4] (N = T or 1)."""
        sources, landmarks = np.asarray(sources), np.asarray(landmarks, dtype=np.float64)
        mouth_params = np.asarray(mouth_params, dtype=np.float32).reshape(-1, 8)
        motion = np.asarray(motion, dtype=np.float32).reshape(-1, 4)
        n, side = sources.shape[0], sources.shape[1]
        frames_count = mouth_params.shape[0]
        if sources.ndim != 4 or sources.shape[2] != side or sources.shape[3] != 3:
            raise ValueError(f"source must be [N, S, S, 3], got {list(sources.shape)}")
        if not MIN_SIDE_PX <= side <= MAX_SIDE_PX:
            raise ValueError(f"crop side {side} outside {MIN_SIDE_PX}..{MAX_SIDE_PX}")
        if landmarks.shape != (n, 468, 3):
            raise ValueError(f"source_landmarks must be [{n}, 468, 3], got {list(landmarks.shape)}")
        if motion.shape[0] != frames_count:
            raise ValueError(f"motion has {motion.shape[0]} frames, mouth_params {frames_count}")
        if n not in (1, frames_count):
            raise ValueError(f"{n} sources for {frames_count} frames: give one source or one per frame")
        grid = self._grid(side)
        palette = face_palette(sources[0].astype(np.float64), landmarks[0])
        frames = np.empty((frames_count, side, side, 3), dtype=np.uint8)
        masks = np.empty((frames_count, side, side), dtype=np.float32)
        fill_cache: dict[int, dict[str, np.ndarray]] = {}
        for t in range(frames_count):
            k = 0 if n == 1 else t
            if k not in fill_cache:
                fill_cache = {k: mouth_fill_feeds(landmarks[k], palette, side)}
            feeds = self._frame_feeds(landmarks[k], mouth_params[t], motion[t], palette, side)
            feeds.update(fill_cache[k])
            feeds["fill_active"] = np.array(fill_cache[k]["fill_params"][0] > 0)
            feeds.update(source=np.ascontiguousarray(sources[k:k + 1], dtype=np.uint8), palette=palette.mouth,
                         grid_aug=grid.grid_aug, grid_window=grid.grid_window, coarse_shape=grid.coarse_shape,
                         base_grid=grid.base_grid, grid_scale=grid.grid_scale)
            frame, mask = self._session.run(list(spec.OUTPUTS), feeds)
            frames[t], masks[t] = frame[0], mask[0]
        return frames, masks

    def _frame_feeds(self, landmarks: np.ndarray, mouth_row: np.ndarray, motion_row: np.ndarray,
                     palette: FacePalette, side: int) -> dict[str, np.ndarray]:
        mouth, motion = MouthParams.from_row(mouth_row), Motion.from_row(motion_row)
        shape = target_shape(landmarks, mouth, motion, side)
        field = fit_field(shape.target_px, shape.source_px, side)
        layer = mouth_layer(shape.inner_upper_px, shape.inner_lower_px, side)
        interior = interior_vector(layer, shape.frame, mouth.teeth, mouth.tongue)
        src_gap = float(np.linalg.norm(landmarks[14, :2] - landmarks[13, :2]))
        strength = max(float(interior[spec.OPEN_STRENGTH]), float(np.clip((src_gap - 1.0) / 1.5, 0, 1)))
        iod = shape.frame.iod_px
        if motion.blink > 0:
            lids = {**lid_feeds("lid_r", shape.eyes_px[0], shape.eyes_px[1], motion.blink, iod, palette.lids[0], side),
                    **lid_feeds("lid_l", shape.eyes_px[2], shape.eyes_px[3], motion.blink, iod, palette.lids[1], side)}
            eyes = [self._eye_ellipse(shape.eyes_px[0], motion.blink, side),
                    self._eye_ellipse(shape.eyes_px[2], motion.blink, side)]
        else:  # the lid layers are skipped in the graph; their inputs only need valid shapes
            lids, eyes = _IDLE_LIDS, []
        return {**lids, "centres_aug": field.augmented(),
                "mouth_active": np.array(interior[spec.OPEN_STRENGTH] > 0), "lids_active": np.array(motion.blink > 0), "weights": field.weights, "affine": field.affine,
                "mouth_roi": layer.roi, "mouth_affine": layer.affine, "mouth_curves": layer.curves,
                "interior": interior,
                "mask_ellipses": np.stack([_mask_ellipse(layer, strength, side, (1.9, 1.7)), *eyes])}

    @staticmethod
    def _eye_ellipse(upper_px: np.ndarray, blink: float, side: int) -> np.ndarray:
        layer = mouth_layer(upper_px[[0, 4, 4, 4, 4, 4, 4, 4, 4, 4, 8]], upper_px[[0, 4, 4, 4, 4, 4, 4, 4, 4, 4, 8]], side)
        return _mask_ellipse(layer, float(np.clip(blink / 0.05, 0, 1)), side, (2.0, 1.6))
