"""`Renderer`: source crops + landmarks + per-frame mouth/motion parameters -> frames and masks.

Once per source (once per request for a still portrait) numpy measures the face: palette, the
mouth fill, eyelid geometry and the control points' face frame. Per batch of frames it computes
the target shapes (`shapes.py`), solves their thin-plate splines together (`field.py`) and
prepares the mouth layers (`interior.py`); one call of the ONNX graph built by `build.py` then
does all pixel work of the batch. Usable without Triton; `model.py` is a thin adapter around it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lipwarp import graphspec as spec
from lipwarp.field import fit_fields
from lipwarp.interior import FacePalette, MouthLayer, face_palette, interior_vector, mouth_fill_feeds, mouth_layer
from lipwarp.lids import EyeLids, eye_lids
from lipwarp.shapes import MouthParams, Motion, SourceShape, move_with_head, source_shape, target_shape

log = logging.getLogger(__name__)

MIN_SIDE_PX, MAX_SIDE_PX = 64, 1024
BATCH_FRAMES = 4  # frames per graph call for a still source (measured: larger batches leave the caches)


@dataclass(frozen=True)
class GridConstants:
    grid_aug: np.ndarray
    grid_window: np.ndarray
    cells: int
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
        cells=cells,
        base_grid=np.stack([bx, by], -1)[None].astype(np.float32),
        grid_scale=np.full((1, 2, 1, 1), 2.0 / side_px, dtype=np.float32),
    )


@dataclass(frozen=True)
class PreparedSource:
    """What depends only on one source crop: reused by every frame rendered from it."""

    image: np.ndarray  # [1, 3, S, S] float32, the open mouth painted shut (source graph)
    shape: SourceShape
    palette: FacePalette
    lids: EyeLids
    gap_px: float  # the source's own inner-lip gap

    @property
    def side(self) -> int:
        return int(self.image.shape[2])


def _ellipse(centre_px: np.ndarray, axis: np.ndarray, half_a_px: float, half_b_px: float, strength: float,
             side: int) -> np.ndarray:
    """[7]: centre, inverse axes (normalised) and strength of a soft mask ellipse."""
    perp = np.array([-axis[1], axis[0]])
    m = np.stack([axis * side / half_a_px, perp * side / half_b_px])
    return np.array([*(centre_px / side), *m.ravel(), strength], dtype=np.float32)


def _union_roi(boxes: list[np.ndarray], side: int) -> np.ndarray:
    b = np.stack(boxes)
    y0, x0 = np.clip(b[:, 0].min(), 0, side - 2), np.clip(b[:, 1].min(), 0, side - 2)
    y1, x1 = np.clip(b[:, 2].max(), y0 + 2, side), np.clip(b[:, 3].max(), x0 + 2, side)
    return np.array([y0, x0, y1, x1], dtype=np.int64)


def _bbox(points: np.ndarray, margin_px: float) -> np.ndarray:
    lo, hi = np.floor(points.min(axis=0) - margin_px), np.ceil(points.max(axis=0) + margin_px)
    return np.array([lo[1], lo[0], hi[1], hi[0]], dtype=np.int64)


class Renderer:
    """Runs the generator graph a batch of frames per call; identical inputs give identical
    outputs, and a frame renders bit-identically alone or inside any batch."""

    def __init__(self, model_dir: Path, threads: int = 1, batch_frames: int = BATCH_FRAMES) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No arena: a batch's buffers go back to the heap (and from there to the system, see
        # model.py), so an idle instance does not keep its largest crop size's memory; measured
        # no slower, as the buffers are large and few.
        options.enable_cpu_mem_arena = False
        self._session = ort.InferenceSession(str(Path(model_dir) / spec.GRAPH_FILE), options, providers=["CPUExecutionProvider"])
        self._source_session = ort.InferenceSession(str(Path(model_dir) / spec.SOURCE_GRAPH_FILE), options,
                                                    providers=["CPUExecutionProvider"])
        self._grids: dict[int, GridConstants] = {}
        self._batch = max(1, int(batch_frames))

    def _grid(self, side_px: int) -> GridConstants:
        if side_px not in self._grids:
            self._grids[side_px] = grid_constants(side_px)
        return self._grids[side_px]

    def prepare(self, image: np.ndarray, landmarks: np.ndarray, palette: FacePalette) -> PreparedSource:
        """Everything about one source crop [S,S,3] that the frames share."""
        side = image.shape[0]
        shape = source_shape(landmarks, side)
        fill = mouth_fill_feeds(landmarks, palette, side)
        fill["fill_active"] = np.array(fill["fill_params"][0] > 0)
        fill["source"] = np.ascontiguousarray(image[None], dtype=np.uint8)
        (prepared,) = self._source_session.run(["prepared"], fill)
        return PreparedSource(image=prepared, shape=shape, palette=palette,
                              lids=eye_lids(image.astype(np.float64), landmarks, shape.frame),
                              gap_px=float(np.linalg.norm(landmarks[14, :2] - landmarks[13, :2])))

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
        palette = face_palette(sources[0].astype(np.float64), landmarks[0])
        frames = np.empty((frames_count, side, side, 3), dtype=np.uint8)
        masks = np.empty((frames_count, side, side), dtype=np.float32)
        # a still source: prepared once, frames in batches; one source per frame: one by one
        step = self._batch if n == 1 else 1
        prepared = self.prepare(sources[0], landmarks[0], palette) if n == 1 else None
        for start in range(0, frames_count, step):
            end = min(start + step, frames_count)
            prep = prepared if prepared is not None else self.prepare(sources[start], landmarks[start], palette)
            frames[start:end], masks[start:end] = self._render_batch(prep, mouth_params[start:end], motion[start:end])
        return frames, masks

    def _render_batch(self, prep: PreparedSource, mouth_rows: np.ndarray,
                      motion_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        side = prep.side
        grid = self._grid(side)
        mouths = [MouthParams.from_row(row) for row in mouth_rows]
        motions = [Motion.from_row(row) for row in motion_rows]
        shapes = [target_shape(prep.shape, m, mo) for m, mo in zip(mouths, motions)]
        field = fit_fields(np.stack([s.target_px for s in shapes]), np.stack([s.source_px for s in shapes]), side)
        layers = [mouth_layer(s.inner_upper_px, s.inner_lower_px, side) for s in shapes]
        interior = np.stack([interior_vector(layer, s.frame, m.teeth, m.tongue)
                             for layer, s, m in zip(layers, shapes, mouths)])
        blink = np.array([mo.blink for mo in motions], dtype=np.float32)
        feeds = {**self._lid_feeds(prep, motions, side),
                 "source": prep.image, "palette": prep.palette.mouth, "blink": blink,
                 "centres_aug": field.augmented(), "weights": field.weights, "affine": field.affine,
                 "grid_aug": grid.grid_aug, "grid_window": grid.grid_window, "base_grid": grid.base_grid,
                 "grid_scale": grid.grid_scale,
                 "coarse_shape": np.array([len(shapes), grid.cells, grid.cells, 2], dtype=np.int64),
                 "mouth_active": np.array(bool((interior[:, spec.OPEN_STRENGTH] > 0).any())),
                 "mouth_roi": _union_roi([layer.roi for layer in layers], side),
                 "mouth_affine": np.stack([layer.affine for layer in layers]),
                 "mouth_curves": np.stack([layer.curves for layer in layers]), "interior": interior,
                 "mask_ellipses": np.stack([self._ellipses(prep, layer, row, mo, side, eyes=bool(blink.any()))
                                            for layer, row, mo in zip(layers, interior, motions)])}
        frame, mask = self._session.run(list(spec.OUTPUTS), feeds)
        return frame, mask

    @staticmethod
    def _lid_feeds(prep: PreparedSource, motions: list[Motion], side: int) -> dict[str, np.ndarray]:
        lids = prep.lids
        boxes = [_bbox(move_with_head(lids.outlines_px.reshape(-1, 2), prep.shape, mo), 0.05 * prep.shape.frame.iod_px + 3)
                 for mo in motions if mo.blink > 0]
        roi = _union_roi(boxes, side) if boxes else np.array([0, 0, 2, 2], dtype=np.int64)
        return {"lids_active": np.array(bool(boxes)), "eye_roi": roi, "eye_affine": lids.affine,
                "eye_curves": lids.curves, "eye_params": lids.params}

    @staticmethod
    def _ellipses(prep: PreparedSource, layer: MouthLayer, interior: np.ndarray, motion: Motion,
                  side: int, eyes: bool) -> np.ndarray:
        """[E, 7]: the mouth, then both eyes when any frame of the batch blinks (an open eye's
        ellipse has zero strength, which leaves the mask exactly as without it)."""
        open_strength = max(float(interior[spec.OPEN_STRENGTH]), float(np.clip((prep.gap_px - 1.0) / 1.5, 0, 1)))
        rows = [_ellipse(layer.centre_px, layer.axis, 1.9 * layer.half_width_px, 1.7 * layer.half_width_px,
                         open_strength, side)]
        c, s = np.cos(motion.head_roll_rad), np.sin(motion.head_roll_rad)
        for outline, axis in zip(prep.lids.outlines_px, prep.lids.axes) if eyes else ():
            moved = move_with_head(outline, prep.shape, motion)
            half_w = 0.5 * float(np.ptp(outline @ axis))
            rows.append(_ellipse(moved.mean(axis=0), np.array([c * axis[0] - s * axis[1], s * axis[0] + c * axis[1]]),
                                 2.0 * half_w, 1.6 * half_w, float(np.clip(motion.blink / 0.05, 0, 1)), side))
        return np.stack(rows)
