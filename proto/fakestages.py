"""Fake stages for tests: `FakeStageClient` and `FakeAsyncStageClient` answer like the real
clients of proto/stageclient.py (same method names, same contract checks, outputs of the
declared names, dtypes and shapes) without a Triton server. Deterministic: the same request
always gets the same answer.

- audio_features: one row per video frame (`ceil(seconds * fps)`, or the frames of part
  i of n); `energy` is the frame's RMS loudness scaled to 0..1, `jaw_open` and `lip_open`
  follow it, `activity` is 1 where the frame is not silent, the other columns 0.
- face_detection: one face per image/frame, a centred box of half the short side, score
  0.99, 468 landmarks on an ellipse inside the box.
- generator: returns the source (or the reference) crops, one per output frame, with a
  zero paste mask, so composing leaves the video unchanged."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .stages import (
    DEFAULT_MAX_FACES,
    N_LANDMARKS,
    N_MOUTH_PARAMS,
    STAGE_MODELS,
    contract,
)

SAMPLE_RATE_HZ = 16_000
SILENCE_RMS = 0.01
FULL_SCALE_RMS = 0.3
FACE_SCORE = 0.99


def _audio_features(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    audio, fps = arrays["audio"], float(arrays["fps"][0])
    total = math.ceil(audio.size / SAMPLE_RATE_HZ * fps)
    index, count = (int(v) for v in arrays.get("part", np.array([0, 1])))
    first, stop = index * total // count, (index + 1) * total // count
    energy = np.zeros(stop - first, np.float32)
    for row, frame in enumerate(range(first, stop)):
        lo = int(frame / fps * SAMPLE_RATE_HZ)
        hi = max(lo + 1, int((frame + 1) / fps * SAMPLE_RATE_HZ))
        chunk = audio[lo:hi]
        rms = float(np.sqrt(np.mean(np.square(chunk)))) if chunk.size else 0.0
        energy[row] = min(1.0, rms / FULL_SCALE_RMS)
    params = np.zeros((energy.size, N_MOUTH_PARAMS), np.float32)
    params[:, 0] = params[:, 1] = energy
    params[:, N_MOUTH_PARAMS - 1] = (energy * FULL_SCALE_RMS > SILENCE_RMS).astype(np.float32)
    return {"mouth_params": params, "energy": energy, "phones": np.array([], dtype=object)}


def _face(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    half = min(height, width) / 4
    cx, cy = width / 2, height / 2
    box = np.array([cx - half, cy - half, cx + half, cy + half], np.float32)
    angles = np.linspace(0, 2 * np.pi, N_LANDMARKS, endpoint=False)
    ring = (np.arange(N_LANDMARKS) % 6 + 1) / 6  # six nested ellipses
    landmarks = np.stack([cx + np.cos(angles) * half * 0.8 * ring, cy + np.sin(angles) * half * ring,
                          np.zeros(N_LANDMARKS)], axis=1).astype(np.float32)
    return box, landmarks


def _face_detection(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    frames = arrays["frames"] if "frames" in arrays else arrays["image"][None]
    max_faces = int(arrays.get("max_faces", np.array([DEFAULT_MAX_FACES]))[0])
    per_frame = min(1, max_faces)
    boxes, landmarks, index = [], [], []
    for k, frame in enumerate(frames):
        for _ in range(per_frame):
            box, points = _face(frame.shape[0], frame.shape[1])
            boxes.append(box)
            landmarks.append(points)
            index.append(k)
    n = len(boxes)
    return {
        "boxes": np.array(boxes, np.float32).reshape(n, 4),
        "scores": np.full(n, FACE_SCORE, np.float32),
        "landmarks": np.array(landmarks, np.float32).reshape(n, N_LANDMARKS, 3),
        "frame_index": np.array(index, np.int32),
    }


def _generator(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    crops = arrays.get("reference", arrays["source"])
    total = arrays["mouth_params"].shape[0]
    picks = np.arange(total) % crops.shape[0] if crops.shape[0] > 1 else np.zeros(total, np.int64)
    frames = crops[picks].copy()
    return {"frames": frames, "mask": np.zeros(frames.shape[:3], np.float32)}


_ANSWERS = {"audio_features": _audio_features, "face_detection": _face_detection, "generator": _generator}


class FakeStageClient:
    """Synchronous fake with StageClient's methods; `requests` records what it was sent."""

    def __init__(self, instances: Mapping[str, int] | None = None) -> None:
        self.instances = dict(instances or {name: 1 for name in STAGE_MODELS})
        self.requests: list[tuple[str, dict[str, np.ndarray]]] = []

    def infer(self, model: str, outputs: tuple[str, ...] = (), **arrays: Any) -> dict[str, np.ndarray]:
        stage = contract(model)
        prepared = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
        stage.check_request(prepared, outputs)
        self.requests.append((model, prepared))
        answer = _ANSWERS[model](prepared)
        names = outputs or tuple(t.name for t in stage.outputs)
        return {name: answer[name] for name in names}

    def instance_count(self, model: str) -> int:
        contract(model)
        return self.instances[model]

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        return None


class FakeAsyncStageClient:
    """The asyncio twin (AsyncStageClient's methods), over the same answers."""

    def __init__(self, instances: Mapping[str, int] | None = None) -> None:
        self.sync = FakeStageClient(instances)

    @property
    def requests(self) -> list[tuple[str, dict[str, np.ndarray]]]:
        return self.sync.requests

    async def infer(self, model: str, outputs: tuple[str, ...] = (), **arrays: Any) -> dict[str, np.ndarray]:
        return self.sync.infer(model, outputs, **arrays)

    async def infer_arrays(self, model: str, outputs: tuple[str, ...], arrays: Mapping[str, Any],
                           output_bytes: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        return self.sync.infer(model, outputs, **arrays)

    async def instance_count(self, model: str) -> int:
        return self.sync.instance_count(model)

    async def instance_counts(self) -> dict[str, int]:
        return {name: self.sync.instance_count(name) for name in STAGE_MODELS}

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None
