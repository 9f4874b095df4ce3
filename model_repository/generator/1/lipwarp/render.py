"""`Renderer`: source crops + landmarks + per-frame mouth/motion parameters -> frames and masks.

Once per source (once per request for a still portrait) numpy measures the face: palette, the
mouth fill, eyelid geometry and the control points' face frame. Per batch of frames it computes
the target shapes (`shapes.py`), solves their thin-plate splines together (`field.py`) and
prepares the mouth layers (`interior.py`); one call of the ONNX graph built by `build.py` then
does all pixel work of the batch. Usable without Triton; `model.py` is a thin adapter around it.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lipwarp import graphspec as spec
from lipwarp.field import fit_fields
from lipwarp.interior import (
    FacePalette,
    MouthLayers,
    face_palette,
    interior_vectors,
    mouth_fill_feeds,
    mouth_layers,
)
from lipwarp.lids import EyeLids, eye_lids
from lipwarp.opening import opened_shapes, uncovered_share
from lipwarp.shapes import (
    BLINK,
    HEAD_ROLL,
    TEETH,
    TONGUE,
    SourceShape,
    motion_rows,
    mouth_rows,
    move_with_head,
    source_shape,
    target_shapes,
)
from proto.ort_providers import session_providers

log = logging.getLogger(__name__)

MIN_SIDE_PX, MAX_SIDE_PX = 64, 1024
BATCH_FRAMES = 4  # frames per graph call for a still source (measured: larger batches leave the caches)
# Still sources kept prepared between requests: a portrait job sends the same crop with every
# batch, a conversation two of them in turn; preparing costs ~5 ms a request otherwise.
PREPARED_KEPT = 4


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


def _ellipses(centre_px: np.ndarray, axis: np.ndarray, half_a_px: np.ndarray, half_b_px: np.ndarray,
              strength: np.ndarray, side: int) -> np.ndarray:
    """[T, 7]: centre, inverse axes (normalised) and strength of T soft mask ellipses."""
    perp = np.stack([-axis[:, 1], axis[:, 0]], axis=-1)
    m = np.stack([axis * (side / half_a_px)[:, None], perp * (side / half_b_px)[:, None]], axis=1)
    return np.concatenate([centre_px / side, m.reshape(-1, 4), strength[:, None]], axis=1).astype(np.float32)


def _union_roi(b: np.ndarray, side: int) -> np.ndarray:
    """The box [4] (y0, x0, y1, x1) around boxes [B, 4], clipped to the crop."""
    y0, x0 = np.clip(b[:, 0].min(), 0, side - 2), np.clip(b[:, 1].min(), 0, side - 2)
    y1, x1 = np.clip(b[:, 2].max(), y0 + 2, side), np.clip(b[:, 3].max(), x0 + 2, side)
    return np.array([y0, x0, y1, x1], dtype=np.int64)


# Eyelids of a crop that never blinks (render_opened): the graph skips the lid layer, so its
# geometry is never read; zeros of the right shapes stand in for measuring it.
_NO_BLINK = EyeLids(affine=np.zeros((spec.EYES, 2, 3), np.float32),
                    curves=np.zeros((spec.EYES, 2, 3 * spec.CURVE_SEGMENTS + 1), np.float32),
                    params=np.zeros((spec.EYES, spec.EYE_PARAMS_LEN), np.float32),
                    outlines_px=np.zeros((spec.EYES, 2 * (spec.CURVE_SEGMENTS + 1), 2)),
                    axes=np.zeros((spec.EYES, 2)))


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
        self._session = ort.InferenceSession(str(Path(model_dir) / spec.GRAPH_FILE), options, providers=session_providers())
        self._source_session = ort.InferenceSession(str(Path(model_dir) / spec.SOURCE_GRAPH_FILE), options,
                                                    providers=session_providers())
        self._grids: dict[int, GridConstants] = {}
        self._batch = max(1, int(batch_frames))
        self._kept: OrderedDict[bytes, PreparedSource] = OrderedDict()

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
        frames = np.empty((frames_count, side, side, 3), dtype=np.uint8)
        masks = np.empty((frames_count, side, side), dtype=np.float32)
        # a still source: prepared once, frames in batches; one source per frame: one by one
        step = self._batch if n == 1 else 1
        prepared = self._prepared_still(sources[0], landmarks[0]) if n == 1 else None
        palette = prepared.palette if prepared is not None else face_palette(sources[0].astype(np.float64), landmarks[0])
        for start in range(0, frames_count, step):
            end = min(start + step, frames_count)
            prep = prepared if prepared is not None else self.prepare(sources[start], landmarks[start], palette)
            self._render_batch(prep, mouth_params[start:end], motion[start:end], frames[start:end], masks[start:end])
        return frames, masks

    def _prepared_still(self, source: np.ndarray, landmarks: np.ndarray) -> PreparedSource:
        """`prepare` for a still source, kept for the next requests with the same crop and
        landmarks (identified by a digest of both)."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(np.ascontiguousarray(source).data)
        digest.update(np.ascontiguousarray(landmarks).data)
        key = digest.digest()
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        prepared = self.prepare(source, landmarks, face_palette(source.astype(np.float64), landmarks))
        self._kept[key] = prepared
        while len(self._kept) > PREPARED_KEPT:
            self._kept.popitem(last=False)
        return prepared

    def _render_batch(self, prep: PreparedSource, mouth_params: np.ndarray, motion_params: np.ndarray,
                      frames: np.ndarray, masks: np.ndarray) -> None:
        """Render into `frames` [T,S,S,3] and `masks` [T,S,S] (views into the request's outputs)."""
        side = prep.side
        grid = self._grid(side)
        mouth, motion = mouth_rows(mouth_params), motion_rows(motion_params)
        shapes = target_shapes(prep.shape, mouth, motion)
        field = fit_fields(shapes.target_px, shapes.source_px, side)
        layers = mouth_layers(shapes.inner_upper_px, shapes.inner_lower_px, side)
        interior = interior_vectors(layers, prep.shape.frame.iod_px, mouth[:, TEETH], mouth[:, TONGUE])
        blink = motion[:, BLINK].astype(np.float32)
        feeds = {**self._lid_feeds(prep, motion, side),
                 "source": prep.image, "palette": prep.palette.mouth, "blink": blink,
                 "centres_aug": field.augmented(), "weights": field.weights, "affine": field.affine,
                 "grid_aug": grid.grid_aug, "grid_window": grid.grid_window, "base_grid": grid.base_grid,
                 "grid_scale": grid.grid_scale,
                 "coarse_shape": np.array([len(mouth), grid.cells, grid.cells, 2], dtype=np.int64),
                 "mouth_active": np.array(bool((interior[:, spec.OPEN_STRENGTH] > 0).any())),
                 "mouth_roi": _union_roi(layers.roi, side),
                 "mouth_affine": layers.affine, "mouth_curves": layers.curves, "interior": interior,
                 "mask_ellipses": self._mask_ellipses(prep, layers, interior, motion, side, eyes=bool(blink.any()))}
        frames[:], masks[:] = self._session.run(list(spec.OUTPUTS), feeds)

    @staticmethod
    def _lid_feeds(prep: PreparedSource, motion: np.ndarray, side: int) -> dict[str, np.ndarray]:
        lids = prep.lids
        blinking = motion[motion[:, BLINK] > 0]
        roi = np.array([0, 0, 2, 2], dtype=np.int64)
        if len(blinking):
            moved = move_with_head(lids.outlines_px.reshape(-1, 2), prep.shape, blinking)  # [B, P, 2]
            margin = 0.05 * prep.shape.frame.iod_px + 3
            lo, hi = np.floor(moved.min(axis=1) - margin), np.ceil(moved.max(axis=1) + margin)
            roi = _union_roi(np.stack([lo[:, 1], lo[:, 0], hi[:, 1], hi[:, 0]], axis=1).astype(np.int64), side)
        return {"lids_active": np.array(bool(len(blinking))), "eye_roi": roi, "eye_affine": lids.affine,
                "eye_curves": lids.curves, "eye_params": lids.params}

    @staticmethod
    def _mask_ellipses(prep: PreparedSource, layers: MouthLayers, interior: np.ndarray, motion: np.ndarray,
                       side: int, eyes: bool) -> np.ndarray:
        """[T, E, 7]: the mouth, then both eyes when any frame of the batch blinks (an open eye's
        ellipse has zero strength, which leaves the mask exactly as without it)."""
        open_strength = np.maximum(interior[:, spec.OPEN_STRENGTH].astype(np.float64),
                                   float(np.clip((prep.gap_px - 1.0) / 1.5, 0, 1)))
        half_w = layers.half_width_px
        rows = [_ellipses(layers.centre_px, layers.axis, 1.9 * half_w, 1.7 * half_w, open_strength, side)]
        c, s = np.cos(motion[:, HEAD_ROLL]), np.sin(motion[:, HEAD_ROLL])
        for outline, axis in zip(prep.lids.outlines_px, prep.lids.axes, strict=True) if eyes else ():
            moved = move_with_head(outline, prep.shape, motion)
            half_eye = np.full(len(motion), 0.5 * float(np.ptp(outline @ axis)))
            rolled = np.stack([c * axis[0] - s * axis[1], s * axis[0] + c * axis[1]], axis=-1)
            # sized so that a shut eye's mask stays above 0.9 after the 8 px grid's pooling
            rows.append(_ellipses(moved.mean(axis=1), rolled, 2.3 * half_eye, 1.9 * half_eye,
                                  np.clip(motion[:, BLINK] / 0.05, 0, 1), side))
        return np.stack(rows, axis=1)

    def render_opened(self, image: np.ndarray, landmarks: np.ndarray, extra_gap_iod: float, teeth: float,
                      tongue: float) -> tuple[np.ndarray, np.ndarray]:
        """One crop [S,S,3] with its mouth opened extra_gap_iod wider (`opening.py`): the
        recording stretched (no fill paints it shut), the synthesized interior only as strong
        as the share of the opening the recording does not show. Returns the opened crop and
        its landmarks [468, 3] (z kept)."""
        image, landmarks = np.asarray(image), np.asarray(landmarks, dtype=np.float64)
        side = image.shape[0]
        palette = face_palette(image.astype(np.float64), landmarks)
        fill = mouth_fill_feeds(landmarks, palette, side)
        fill["fill_active"] = np.array(False)
        fill["source"] = np.ascontiguousarray(image[None], dtype=np.uint8)
        (unfilled,) = self._source_session.run(["prepared"], fill)
        shape = source_shape(landmarks, side)
        prep = PreparedSource(image=unfilled, shape=shape, palette=palette, lids=_NO_BLINK,
                              gap_px=float(np.linalg.norm(landmarks[14, :2] - landmarks[13, :2])))
        shapes, moved = opened_shapes(shape, np.array([extra_gap_iod]))
        grid = self._grid(side)
        motion = np.zeros((1, 4))
        field = fit_fields(shapes.target_px, shapes.source_px, side)
        layers = mouth_layers(shapes.inner_upper_px, shapes.inner_lower_px, side)
        interior = interior_vectors(layers, shape.frame.iod_px, np.array([teeth]), np.array([tongue]))
        interior[:, spec.OPEN_STRENGTH] *= uncovered_share(prep.gap_px, layers.gap_px)
        feeds = {**self._lid_feeds(prep, motion, side),
                 "source": prep.image, "palette": palette.mouth, "blink": np.zeros(1, np.float32),
                 "centres_aug": field.augmented(), "weights": field.weights, "affine": field.affine,
                 "grid_aug": grid.grid_aug, "grid_window": grid.grid_window, "base_grid": grid.base_grid,
                 "grid_scale": grid.grid_scale,
                 "coarse_shape": np.array([1, grid.cells, grid.cells, 2], dtype=np.int64),
                 "mouth_active": np.array(bool((interior[:, spec.OPEN_STRENGTH] > 0).any())),
                 "mouth_roi": _union_roi(layers.roi, side),
                 "mouth_affine": layers.affine, "mouth_curves": layers.curves, "interior": interior,
                 "mask_ellipses": self._mask_ellipses(prep, layers, interior, motion, side, eyes=False)}
        frames, _ = self._session.run(list(spec.OUTPUTS), feeds)
        opened = landmarks.astype(np.float32)
        opened[:, :2] = moved[0]
        return frames[0], opened
