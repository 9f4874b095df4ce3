"""Rendering a dub: crop boxes at the source's own resolution, then each output frame is the
source frame order[k] with source frame references[k]'s mouth transplanted by the generator
(opened openings[k] wider, or a parametric mouth where references[k] is PARAMETRIC), pasted
back and encoded in pipelined batches. Frames without the face pass through unchanged."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from orchestrator.batches import batch_spans, pipelined
from orchestrator.dubbing.references import PARAMETRIC
from orchestrator.dubbing.tracking import SourceVideo
from orchestrator.stages import DetectedFace, Stages, render_ahead
from postprocess.blend import paste_crop
from postprocess.encode import Mp4Writer
from preprocess.align import CropBox, extract_crop, face_crop_box, smooth_boxes

CROP_ALIGN_PX = 32  # crop sides are multiples of this (the generator's and the transplant's grid)
DUB_CROP_MAX_PX = 512  # native-resolution crops up to this side; larger faces are cropped smaller


def _smoothed_boxes(faces: list[DetectedFace | None], max_side: int = DUB_CROP_MAX_PX) -> list[CropBox | None]:
    """Crop boxes per source frame at the frame's own resolution: one side for the whole video
    (the median face's crop to the nearest multiple of CROP_ALIGN_PX, at most max_side pixels), centres
    smoothed over each run of consecutive tracked frames. An integral box whose side equals
    its size is cut out and pasted back without resampling, so the transplanted mouth is
    resampled once, by the transplant itself, and keeps the source's detail."""
    boxes: list[CropBox | None] = [None] * len(faces)
    sides = [face_crop_box(face.landmarks, size=CROP_ALIGN_PX).side for face in faces if face is not None]
    if not sides:
        return boxes
    side = float(max(1, int(round(float(np.median(sides)) / CROP_ALIGN_PX))) * CROP_ALIGN_PX)
    size = int(min(side, max_side // CROP_ALIGN_PX * CROP_ALIGN_PX))
    run: list[int] = []
    for i, face in enumerate(faces + [None]):
        if face is not None:
            centre = (face.landmarks[:, :2].min(0) + face.landmarks[:, :2].max(0)) / 2
            boxes[i] = CropBox(x0=float(centre[0]) - side / 2, y0=float(centre[1]) - side / 2, side=side, size=size)
            run.append(i)
        elif run:
            smooth = smooth_boxes([boxes[j] for j in run])  # type: ignore[misc]
            for j, box in zip(run, smooth, strict=True):
                boxes[j] = box
            run = []
    return boxes


class _BatchCrops:
    """Crops and crop-space landmarks of the source frames one batch needs, each extracted once."""

    def __init__(self, source: SourceVideo, boxes: list[CropBox | None]) -> None:
        self._source, self._boxes = source, boxes
        self._crops: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._crops:
            box, face = self._boxes[index], self._source.faces[index]
            if box is None or face is None:
                raise ValueError(f"source frame {index} has no tracked face to crop")
            self._crops[index] = (extract_crop(self._source.frames[index], box), box.to_crop(face.landmarks))
        return self._crops[index]

    def stack(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.get(i) for i in indices]
        return np.stack([c for c, _ in pairs]), np.stack([lm for _, lm in pairs])


async def render_dub(
    source: SourceVideo, order: np.ndarray, mouth_params: np.ndarray, writer: Mp4Writer,
    stages: Stages, batch: int, on_batch: Callable[[int], Awaitable[None]],
    references: np.ndarray | None = None, openings: np.ndarray | None = None,
) -> None:
    """Write the output frames: source frame order[k] showing source frame references[k]'s
    mouth (transplanted, opened openings[k] IODs wider), or, where that is PARAMETRIC, its
    mouth set to mouth_params[k].

    Batches are pipelined: while the generator renders the next ones (one per generator instance), the
    current one is pasted and encoded in a worker thread."""
    boxes = _smoothed_boxes(source.faces)
    total = len(order)
    refs = np.full(total, PARAMETRIC, np.int64) if references is None else np.asarray(references, np.int64)
    opened = np.zeros(total, np.float32) if openings is None else np.asarray(openings, np.float32)
    job = _DubBatches(source, order, refs, mouth_params, boxes, stages, opened)
    spans = batch_spans(total, batch)
    if not spans:
        return

    async def compose(start: int, stop: int, rendered: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        await asyncio.to_thread(job.write, start, stop, rendered, writer)
        await on_batch(stop)

    await pipelined(spans, job.render, compose, render_ahead(stages))


@dataclass(frozen=True)
class _DubBatches:
    """One dub's batches: which output frames are transplanted, parametric or unchanged."""

    source: SourceVideo
    order: np.ndarray
    refs: np.ndarray
    mouth_params: np.ndarray
    boxes: list[CropBox | None]
    stages: Stages
    openings: np.ndarray  # float32 [T]: extra inner-lip gap of each transplanted mouth (IODs)

    async def render(self, start: int, stop: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """(crop, mask) for every output frame in [start, stop) whose face is re-rendered."""
        crops = _BatchCrops(self.source, self.boxes)
        transplant: list[int] = []
        parametric: list[int] = []
        for k in range(start, stop):
            target, ref = int(self.order[k]), int(self.refs[k])
            if self.boxes[target] is None or (ref == target and self.openings[k] <= 0):
                continue  # no face, or the frame's own mouth is the chosen one: unchanged
            (transplant if ref >= 0 and self.boxes[ref] is not None else parametric).append(k)
        still = np.zeros((stop - start, 4), np.float32)  # the video keeps its own blinks and head motion
        rendered: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if transplant:
            # crops are cut in a worker thread: the event loop keeps feeding the generator
            images, landmarks = await asyncio.to_thread(crops.stack, [int(self.order[k]) for k in transplant])
            ref_images, ref_landmarks = await asyncio.to_thread(crops.stack, [int(self.refs[k]) for k in transplant])
            opening = self.openings[transplant]
            out = await self.stages.generate(images, landmarks, self.mouth_params[transplant], still[:len(transplant)],
                                             reference=ref_images, reference_landmarks=ref_landmarks,
                                             reference_opening=opening if (opening > 0).any() else None)
            rendered.update({k: (out.frames[i], out.masks[i]) for i, k in enumerate(transplant)})
        if parametric:
            images, landmarks = await asyncio.to_thread(crops.stack, [int(self.order[k]) for k in parametric])
            out = await self.stages.generate(images, landmarks, self.mouth_params[parametric],
                                             still[:len(parametric)])
            rendered.update({k: (out.frames[i], out.masks[i]) for i, k in enumerate(parametric)})
        return rendered

    def write(self, start: int, stop: int, rendered: dict[int, tuple[np.ndarray, np.ndarray]],
              writer: Mp4Writer) -> None:
        for k in range(start, stop):
            frame = self.source.frames[self.order[k]]  # a new array: pasted on in place
            if k in rendered:
                _paste_changed(frame, rendered[k][0], rendered[k][1], self.boxes[self.order[k]])
            writer.write(frame)


def _paste_changed(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, box: CropBox) -> None:
    """paste_crop on the smallest square of the crop that holds the whole mask (a transplant
    changes only the lower face): the same pixels, resampled over a fraction of the area.
    An integral box takes paste_crop's whole-crop resize, which is cheaper still."""
    if box.integral:
        paste_crop(frame, crop, mask, box)
        return
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return
    margin = 2  # bilinear resampling reads one crop pixel beyond the mask's edge
    side = min(box.size, max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 + 2 * margin)
    y0 = int(np.clip(rows[0] - margin, 0, box.size - side))
    x0 = int(np.clip(cols[0] - margin, 0, box.size - side))
    scale = box.size / box.side
    sub = CropBox(x0=box.x0 + x0 / scale, y0=box.y0 + y0 / scale, side=side / scale, size=side)
    paste_crop(frame, np.ascontiguousarray(crop[y0:y0 + side, x0:x0 + side]),
               np.ascontiguousarray(mask[y0:y0 + side, x0:x0 + side]), sub)
