"""Dubbing a talking video (lipsync-video): the source frames are decoded once at the output
size into a scratch frame store (disk, so memory stays flat in video length) while the face
is tracked; then the output timeline (sync_mode) is rendered frame by frame, the generator
re-shaping the mouth of each source frame to the new speech. Frames without the face pass
through unchanged."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.faces import MIN_FACE_PX, mask_coverage
from orchestrator.stages import DetectedFace, Stages
from postprocess.blend import paste_crop
from postprocess.encode import Mp4Writer
from preprocess.align import CropBox, extract_crop, face_crop_box, smooth_boxes
from preprocess.errors import MediaError

SYNC_MODES = ("bounce", "loop", "cut_off", "silence")


@dataclass
class SourceVideo:
    """Decoded source frames (memory-mapped scratch file) and the tracked face per frame."""

    frames: np.ndarray                      # uint8 memmap [N, H, W, 3]
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
        if _iou(best.box, previous.box) > 0.3:
            return best
    if mask is not None:
        covered = [f for f in candidates if mask_coverage(f, mask) > 0.5]
        if not covered:
            return None
        candidates = covered
    return max(candidates, key=lambda f: f.area)


async def track_video(
    frames: Iterator[np.ndarray], frame_count_hint: int, store_path: Path, size: tuple[int, int],
    stages: Stages, mask: np.ndarray | None, on_frame: Callable[[int], Awaitable[None]],
) -> SourceVideo:
    """Decode every frame into the store and track the chosen face through the video."""
    capacity = max(1, frame_count_hint + 8)
    store = np.lib.format.open_memmap(store_path, mode="w+", dtype=np.uint8,
                                      shape=(capacity, size[1], size[0], 3))
    faces: list[DetectedFace | None] = []
    previous: DetectedFace | None = None
    for index, frame in enumerate(frames):
        if index >= capacity:
            break  # container under-reported its length by more than the slack: stop there
        store[index] = frame
        prior = previous.box[None] if previous is not None else None
        found = await stages.detect_faces(frame, max_faces=4, prior_boxes=prior)
        if not found and prior is not None:  # lost the track: a cut or an occlusion
            found = await stages.detect_faces(frame, max_faces=4)
        face = _pick(found, previous, mask)
        faces.append(face)
        previous = face
        await on_frame(index + 1)
    store.flush()
    if not any(face is not None for face in faces):
        raise MediaError("face_not_found", "No face found in any frame of the video")
    return SourceVideo(frames=store[: len(faces)], faces=faces)


def timeline(source_count: int, audio_frames: int, sync_mode: str) -> np.ndarray:
    """Source frame index for every output frame, by `sync_mode` (SPEC section 3)."""
    if sync_mode == "cut_off":
        return np.arange(min(source_count, audio_frames))
    if sync_mode == "silence":
        return np.arange(source_count)
    k = np.arange(audio_frames)
    if sync_mode == "loop" or source_count < 2:
        return k % source_count
    period = 2 * (source_count - 1)  # bounce: 0..N-1, N-2..1, 0.. (no repeated end frames)
    phase = k % period
    return np.where(phase < source_count, phase, period - phase)


def _smoothed_boxes(faces: list[DetectedFace | None], short_side: int) -> list[CropBox | None]:
    """Crop boxes per source frame, smoothed over each run of consecutive tracked frames."""
    boxes: list[CropBox | None] = [None] * len(faces)
    size = None
    run: list[int] = []
    for i, face in enumerate(faces + [None]):
        if face is not None:
            box = face_crop_box(face.landmarks, size=size, short_side=short_side)
            size = size or box.size
            run.append(i)
            boxes[i] = box
        elif run:
            smooth = smooth_boxes([boxes[j] for j in run])  # type: ignore[misc]
            for j, box in zip(run, smooth):
                boxes[j] = box
            run = []
    return boxes


async def render_dub(
    source: SourceVideo, order: np.ndarray, mouth_params: np.ndarray, writer: Mp4Writer,
    stages: Stages, batch: int, on_batch: Callable[[int], Awaitable[None]],
) -> None:
    """Write the output frames: source frame order[k] with its mouth set to mouth_params[k]."""
    boxes = _smoothed_boxes(source.faces, short_side=min(source.frames.shape[1:3]))
    total = len(order)
    still = np.zeros(4, np.float32)  # the video keeps its own blinks and head motion
    for start in range(0, total, batch):
        stop = min(total, start + batch)
        ks = [k for k in range(start, stop) if boxes[order[k]] is not None]
        rendered = {}
        if ks:
            crops = np.stack([extract_crop(source.frames[order[k]], boxes[order[k]]) for k in ks])  # type: ignore[arg-type]
            landmarks = np.stack([boxes[order[k]].to_crop(source.faces[order[k]].landmarks) for k in ks])  # type: ignore[union-attr]
            motion = np.tile(still, (len(ks), 1))
            out = await stages.generate(crops, landmarks, mouth_params[ks], motion)
            rendered = {k: (out.frames[i], out.masks[i]) for i, k in enumerate(ks)}
        for k in range(start, stop):
            frame = np.array(source.frames[order[k]])
            if k in rendered:
                paste_crop(frame, rendered[k][0], rendered[k][1], boxes[order[k]])  # type: ignore[arg-type]
            writer.write(frame)
        await on_batch(stop)
