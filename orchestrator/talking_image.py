"""Rendering talking portraits (lipsync-image and lipsync-image-multi): every output frame
is the still image with each animated face's crop re-rendered by the generator stage from
its mouth parameters and motion, then blended back. Frames stream in batches."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from orchestrator.batches import batch_spans, pipelined
from orchestrator.stages import DetectedFace, Rendered, Stages, render_ahead
from postprocess.blend import paste_crop
from postprocess.encode import Mp4Writer
from preprocess.align import CropBox, extract_crop, face_crop_box


@dataclass(frozen=True)
class AnimatedFace:
    """One face of the still image and what it does over the T output frames."""

    face: DetectedFace
    mouth_params: np.ndarray   # float32 [T, 8]
    motion: np.ndarray         # float32 [T, 4]


async def render_still(
    image: np.ndarray,
    faces: list[AnimatedFace],
    frame_count: int,
    writer: Mp4Writer,
    stages: Stages,
    batch: int,
    on_batch: Callable[[int], Awaitable[None]],
) -> None:
    """Write `frame_count` frames of `image` with every face animated."""
    short_side = min(image.shape[:2])
    crops: list[tuple[CropBox, np.ndarray, np.ndarray]] = []
    for animated in faces:
        box = face_crop_box(animated.face.landmarks, short_side=short_side)
        crops.append((box, extract_crop(image, box)[None], box.to_crop(animated.face.landmarks)[None]))

    async def render_batch(start: int, stop: int) -> list[tuple[CropBox, Rendered]]:
        rendered = []
        for animated, (box, crop, landmarks) in zip(faces, crops, strict=True):
            out = await stages.generate(crop, landmarks, animated.mouth_params[start:stop],
                                        animated.motion[start:stop])
            rendered.append((box, out))
        return rendered

    async def compose(start: int, stop: int, rendered: list[tuple[CropBox, Rendered]]) -> None:
        # Blending and encoding run in a worker thread (OpenCV, PIL and x264 release the
        # GIL), so the event loop keeps driving the next batches' gRPC calls meanwhile.
        await asyncio.to_thread(_compose_batch, image, rendered, stop - start, writer)
        await on_batch(stop)

    await pipelined(batch_spans(frame_count, batch), render_batch, compose, render_ahead(stages))


def _compose_batch(image: np.ndarray, rendered: list[tuple[CropBox, Rendered]], count: int,
                   writer: Mp4Writer) -> None:
    for i in range(count):
        frame = image.copy()
        for box, out in rendered:
            paste_crop(frame, out.frames[i], out.masks[i], box)
        writer.write(frame)


def place_in_timeline(values: np.ndarray, start: int, total: int, rest: np.ndarray | None = None) -> np.ndarray:
    """Put per-frame rows at `start` of a `total`-frame timeline; elsewhere the rest value."""
    width = values.shape[1] if values.ndim == 2 else None
    shape = (total, width) if width is not None else (total,)
    out = np.zeros(shape, np.float32)
    if rest is not None:
        out[:] = rest
    stop = min(total, start + values.shape[0])
    out[start:stop] = values[: stop - start]
    return out
