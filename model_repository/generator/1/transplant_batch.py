"""The generator stage's transplant mode: a request that carries `reference` crops renders
every frame by `transplant.transplant_mouth` (the reference frame's own mouth on the source
frame's head) through one shared ONNX session; shapes are checked here, once per request.
With the optional `reference_opening`, a reference is first opened wider by the parametric
generator's graph (`lipwarp.render.Renderer.render_opened`) and that opened mouth is
transplanted."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from transplant import COARSE_STEP_PX, GRAPH_FILE, TransplantGraph, transplant_mouth

log = logging.getLogger(__name__)

TEETH, TONGUE = 5, 6  # mouth_params columns that shape the interior of an opened reference


class MouthOpener(Protocol):
    def render_opened(self, image: np.ndarray, landmarks: np.ndarray, extra_gap_iod: float, teeth: float,
                      tongue: float) -> tuple[np.ndarray, np.ndarray]: ...


class TransplantRenderer:
    """Renders transplant requests; the numpy pixel stage stands in when the graph is missing."""

    def __init__(self, model_dir: Path, threads: int = 1, opener: MouthOpener | None = None) -> None:
        path = Path(model_dir) / GRAPH_FILE
        self._opener = opener
        self._graph: TransplantGraph | None = None
        if path.is_file():
            self._graph = TransplantGraph(Path(model_dir), threads=threads)
        else:
            log.warning("%s missing (run `make models`): transplant pixels run in numpy", path)

    def render(self, source: np.ndarray, source_landmarks: np.ndarray, reference: np.ndarray,
               reference_landmarks: np.ndarray, count: int, opening: np.ndarray | None = None,
               mouth_params: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`count` frames: frame t is reference[t]'s mouth on source[t] (a leading dim of 1
        broadcasts), opened opening[t] IODs wider where that is > 0 (its interior shaped by
        mouth_params[t]'s teeth and tongue). Returns (frames uint8 [T,S,S,3], masks float32 [T,S,S])."""
        source, reference = np.asarray(source), np.asarray(reference)
        _check_pair("source", source, source_landmarks, count)
        _check_pair("reference", reference, reference_landmarks, count)
        opening = _check_opening(opening, reference.shape[0], self._opener is not None)
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
                ref_image, ref_landmarks = reference[r], reference_landmarks[r]
                if opening is not None and opening[r] > 0 and self._opener is not None:
                    row = mouth_params[t] if mouth_params is not None else np.zeros(TONGUE + 1, np.float32)
                    ref_image, ref_landmarks = self._opener.render_opened(
                        ref_image, ref_landmarks, float(opening[r]), float(row[TEETH]), float(row[TONGUE]))
                transplant_mouth(source[s], source_landmarks[s], ref_image, ref_landmarks, self._graph,
                                 out=(frames[t], masks[t]))
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


def _check_opening(opening: np.ndarray | None, references: int, can_open: bool) -> np.ndarray | None:
    """The extra openings (float [M]) or None when none is asked for."""
    if opening is None:
        return None
    opening = np.asarray(opening, np.float32)
    if opening.shape != (references,):
        raise ValueError(f"reference_opening must be [{references}], got {list(opening.shape)}")
    if not np.isfinite(opening).all() or (opening < 0).any():
        raise ValueError("reference_opening must be finite and >= 0")
    if (opening > 0).any() and not can_open:
        raise ValueError("this generator cannot open reference mouths")
    return opening
