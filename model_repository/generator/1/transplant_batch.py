"""The generator stage's transplant mode: a request that carries `reference` crops renders
every frame by `transplant.transplant_mouth` (the reference frame's own mouth on the source
frame's head) through one shared ONNX session; shapes are checked here, once per request."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from transplant import COARSE_STEP_PX, GRAPH_FILE, TransplantGraph, transplant_mouth

log = logging.getLogger(__name__)


class TransplantRenderer:
    """Renders transplant requests; the numpy pixel stage stands in when the graph is missing."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        path = Path(model_dir) / GRAPH_FILE
        self._graph: TransplantGraph | None = None
        if path.is_file():
            self._graph = TransplantGraph(Path(model_dir), threads=threads)
        else:
            log.warning("%s missing (run `make models`): transplant pixels run in numpy", path)

    def render(self, source: np.ndarray, source_landmarks: np.ndarray, reference: np.ndarray,
               reference_landmarks: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` frames: frame t is reference[t]'s mouth on source[t] (a leading dim of 1
        broadcasts). Returns (frames uint8 [T,S,S,3], masks float32 [T,S,S])."""
        source, reference = np.asarray(source), np.asarray(reference)
        _check_pair("source", source, source_landmarks, count)
        _check_pair("reference", reference, reference_landmarks, count)
        if reference.shape[1:] != source.shape[1:]:
            raise ValueError(f"reference crops {list(reference.shape[1:])} differ from source crops {list(source.shape[1:])}")
        side = source.shape[1]
        if side % COARSE_STEP_PX:
            raise ValueError(f"crop side {side} is not a multiple of {COARSE_STEP_PX}")
        frames = np.empty((count, side, side, 3), np.uint8)
        masks = np.zeros((count, side, side), np.float32)
        for t in range(count):
            s, r = min(t, source.shape[0] - 1), min(t, reference.shape[0] - 1)
            try:
                frames[t], masks[t] = transplant_mouth(source[s], source_landmarks[s], reference[r],
                                                       reference_landmarks[r], self._graph)
            except (ValueError, np.linalg.LinAlgError) as exc:
                # One degenerate frame (landmarks collapsed) passes through instead of failing the job.
                log.warning("transplant frame %d passed through: %s", t, exc)
                frames[t] = source[s]
        return frames, masks


def _check_pair(name: str, crops: np.ndarray, landmarks: np.ndarray, count: int) -> None:
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[3] != 3 or crops.shape[1] != crops.shape[2]:
        raise ValueError(f"{name} must be uint8 [N, S, S, 3], got {crops.dtype} {list(crops.shape)}")
    if crops.shape[0] not in (1, count):
        raise ValueError(f"{name} has {crops.shape[0]} crops for {count} frames (must be 1 or {count})")
    if landmarks.shape != (crops.shape[0], 468, 3):
        raise ValueError(f"{name}_landmarks must be [{crops.shape[0]}, 468, 3], got {list(landmarks.shape)}")
    if not np.isfinite(landmarks).all():
        raise ValueError(f"{name}_landmarks are not finite")
