"""Tracking for a dub: the source frames are decoded once at the output size into a scratch
frame store (disk and the kernel's page cache, so the process's memory stays flat in video
length) while the face_detection stage follows the chosen face from frame to frame."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.batches import abandon
from orchestrator.faces import MASK_COVERAGE_MIN, MAX_FACES, MIN_FACE_PX, mask_coverage
from orchestrator.stages import DetectedFace, Stages
from preprocess.decode import FrameStore
from preprocess.errors import MediaError
from proto.vocabulary import ErrorCode

TRACK_BATCH = 8  # frames per face_detection request while tracking
FOLLOW_IOU_MIN = 0.3  # box overlap with the previous frame's face above which it is the same face


@dataclass
class SourceVideo:
    """Decoded source frames and the tracked face per frame."""

    frames: FrameStore                      # uint8 [N, H, W, 3] in a scratch file
    faces: list[DetectedFace | None]

    @property
    def count(self) -> int:
        return len(self.faces)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _pick(faces: list[DetectedFace], previous: DetectedFace | None, mask: np.ndarray | None) -> DetectedFace | None:
    """Follow the previous face by overlap; else the face under the mask; else the largest."""
    candidates = [f for f in faces if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= MIN_FACE_PX]
    if not candidates:
        return None
    if previous is not None:
        best = max(candidates, key=lambda f: _iou(f.box, previous.box))
        if _iou(best.box, previous.box) > FOLLOW_IOU_MIN:
            return best
    if mask is not None:
        covered = [f for f in candidates if mask_coverage(f, mask) > MASK_COVERAGE_MIN]
        if not covered:
            return None
        candidates = covered
    return max(candidates, key=lambda f: f.area)


async def track_video(
    frames: Iterator[np.ndarray], frame_count_hint: int, store_path: Path, size: tuple[int, int],
    stages: Stages, mask: np.ndarray | None, on_frame: Callable[[int], Awaitable[None]],
) -> SourceVideo:
    """Decode every frame into the store and track the chosen face through the video.

    Frames go to the face_detection stage TRACK_BATCH at a time (the stage follows the faces
    from frame to frame, one request instead of one per frame), while a worker thread
    decodes the next batch."""
    capacity = max(1, frame_count_hint + 8)  # past it the container under-reported its length
    store = FrameStore(store_path, size)
    faces: list[DetectedFace | None] = []
    previous: DetectedFace | None = None
    source = iter(frames)

    def decode_batch() -> np.ndarray:
        """Decode up to TRACK_BATCH frames and append them to the store; [count, H, W, 3]."""
        batch: list[np.ndarray] = []
        while len(batch) < TRACK_BATCH and store.count + len(batch) < capacity:
            frame = next(source, None)
            if frame is None:
                break
            batch.append(frame)
        decoded = np.stack(batch) if batch else np.zeros((0, size[1], size[0], 3), np.uint8)
        store.extend(decoded)
        return decoded

    upcoming = asyncio.ensure_future(asyncio.to_thread(decode_batch))
    try:
        while True:
            batch = await upcoming
            if batch.shape[0] == 0:
                break
            upcoming = asyncio.ensure_future(asyncio.to_thread(decode_batch))
            prior = previous.box[None] if previous is not None else None
            for found in await stages.track_faces(batch, max_faces=MAX_FACES, prior_boxes=prior):
                face = _pick(found, previous, mask)
                faces.append(face)
                previous = face
            await on_frame(len(faces))
    finally:
        await abandon([upcoming], cancel=False)  # the worker thread finishes writing its batch
    if not any(face is not None for face in faces):
        raise MediaError(ErrorCode.FACE_NOT_FOUND, "No face found in any frame of the video")
    return SourceVideo(frames=store, faces=faces)
