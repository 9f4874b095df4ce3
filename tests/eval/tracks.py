"""Face landmarks through a video with the project's own face_detection logic (BlazeFace +
MediaPipe Face Mesh, run in-process, tracked from the previous frame's box), one track per
face ordered left to right, plus full frames kept at a few evenly spaced sample times."""
from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FACE_MODEL_DIR = ROOT / "model_repository" / "face_detection" / "1"
NUM_LANDMARKS = 468
SAMPLE_COUNT = 12


@dataclass(frozen=True)
class FaceTrack:
    fps: float
    landmarks: np.ndarray  # float32 [T, 468, 3], NaN where this face was not found

    @property
    def frame_count(self) -> int:
        return int(self.landmarks.shape[0])

    @property
    def found_fraction(self) -> float:
        return float(np.isfinite(self.landmarks[:, 0, 0]).mean()) if self.frame_count else 0.0


@dataclass(frozen=True)
class TrackedVideo:
    fps: float
    tracks: list[FaceTrack]  # left to right
    samples: dict[int, np.ndarray]  # frame index -> full RGB frame


def load_face_mesh() -> Any:
    """The face_detection stage's logic module (its model.py adapter is not needed)."""
    if str(FACE_MODEL_DIR) not in sys.path:
        sys.path.insert(0, str(FACE_MODEL_DIR))
    from facemesh import FaceMesh  # noqa: PLC0415 - lives beside the Triton model

    return FaceMesh(FACE_MODEL_DIR, num_threads=2)


def sample_indices(frame_count: int, count: int = SAMPLE_COUNT) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, max(frame_count - 1, 0), min(count, max(frame_count, 1)))})


def track_faces(face_mesh: Any, frames: Iterable[np.ndarray], fps: float, frame_count: int,
                face_count: int = 1) -> TrackedVideo:
    """Landmarks of face_count faces per frame; each new face goes to the nearest track."""
    wanted = set(sample_indices(frame_count))
    tracks = [np.full((frame_count, NUM_LANDMARKS, 3), np.nan, np.float32) for _ in range(face_count)]
    centers: list[np.ndarray | None] = [None] * face_count
    priors: np.ndarray | None = None
    samples: dict[int, np.ndarray] = {}
    for index, frame in enumerate(frames):
        if index >= frame_count:
            break
        if index in wanted:
            samples[index] = frame
        faces = face_mesh.detect(frame, max_faces=face_count, prior_boxes=priors)
        for slot, face in _assign(faces, centers):
            tracks[slot][index] = face.landmarks
            centers[slot] = (face.box[:2] + face.box[2:]) / 2
        priors = np.stack([f.box for f in faces]) if faces else None
    return TrackedVideo(fps, [FaceTrack(fps, t) for t in tracks], samples)


def _assign(faces: list[Any], centers: list[np.ndarray | None]) -> list[tuple[int, Any]]:
    """First sight: left to right; later: each face to the closest previous centre."""
    if all(c is None for c in centers):
        ordered = sorted(faces, key=lambda f: float(f.box[0] + f.box[2]))
        return list(enumerate(ordered[: len(centers)]))
    pairs: list[tuple[int, Any]] = []
    free = [i for i, c in enumerate(centers)]
    for face in faces:
        if not free:
            break
        center = (face.box[:2] + face.box[2:]) / 2
        slot = min(free, key=lambda i: float(np.linalg.norm(center - centers[i])) if centers[i] is not None else 1e9)
        free.remove(slot)
        pairs.append((slot, face))
    return pairs
