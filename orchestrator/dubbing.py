"""Dubbing a talking video (lipsync-video): the source frames are decoded once at the output
size into a scratch frame store (disk and the kernel's page cache, so the process's memory
stays flat in video length) while the face is tracked; each output frame then shows the
person's own mouth from the source frame that best matches the new speech (Video Rewrite
re-synthesis, `mouth_library`/`mouth_select`), transplanted by the generator, or a
parametric mouth where the video has no such shape. Frames without the face pass through
unchanged."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.batches import abandon, batch_spans, pipelined
from orchestrator.faces import MIN_FACE_PX, mask_coverage
from orchestrator.mouth_library import LIP_OPEN, MouthLibrary, build_library
from orchestrator.mouth_select import match_speaking_style, select_mouths
from orchestrator.stages import DetectedFace, Stages
from postprocess.blend import paste_crop
from postprocess.encode import Mp4Writer
from preprocess.align import CropBox, extract_crop, face_crop_box, smooth_boxes
from preprocess.decode import FrameStore
from preprocess.errors import MediaError

log = logging.getLogger(__name__)

SYNC_MODES = ("bounce", "loop", "cut_off", "silence")
TRACK_BATCH = 8  # frames per face_detection request while tracking
PARAMETRIC = -1  # `references` entry: no library mouth fits, the parametric generator renders
CROP_ALIGN_PX = 32  # crop sides are multiples of this (the generator's and the transplant's grid)
DUB_CROP_MAX_PX = 512  # native-resolution crops up to this side; larger faces are cropped smaller
LIBRARY_MIN_FRAMES = 150  # frames tracked for the mouth library even when the output shows fewer (~6 s)
LIBRARY_MAX_FRAMES = 750  # the library is an even sample of runs from at most this many frames (~30 s)
LIBRARY_RUN_FRAMES = 25  # sampled in runs of this many consecutive frames (mouth motion stays measurable)


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
        batch = []
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
            for found in await stages.track_faces(batch, max_faces=4, prior_boxes=prior):
                face = _pick(found, previous, mask)
                faces.append(face)
                previous = face
            await on_frame(len(faces))
    finally:
        await abandon([upcoming], cancel=False)  # the worker thread finishes writing its batch
    if not any(face is not None for face in faces):
        raise MediaError("face_not_found", "No face found in any frame of the video")
    return SourceVideo(frames=store, faces=faces)


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


def frames_to_track(source_frames: int, audio_frames: int, sync_mode: str,
                    library_min: int = LIBRARY_MIN_FRAMES) -> int:
    """How many leading source frames a dub needs decoded and tracked: those its timeline
    shows, and at least library_min (the mouth library's minimum sample) where the video has them."""
    shown = int(timeline(source_frames, audio_frames, sync_mode).max(initial=0)) + 1
    return max(1, min(source_frames, max(shown, library_min)))


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
            for j, box in zip(run, smooth):
                boxes[j] = box
            run = []
    return boxes


def library_sample(count: int, max_frames: int = LIBRARY_MAX_FRAMES, run: int = LIBRARY_RUN_FRAMES) -> np.ndarray:
    """Source frames the mouth library measures (bool [count]): all of a short video; of a
    long one, runs of `run` consecutive frames spread evenly, max_frames in all."""
    keep = np.zeros(count, bool)
    if count <= max_frames:
        keep[:] = True
        return keep
    runs = max(1, max_frames // run)
    for start in np.linspace(0, count - run, runs).astype(int):
        keep[start:start + run] = True
    return keep


def source_library(source: SourceVideo) -> MouthLibrary:
    """The person's own mouths: a bounded sample of the tracked source frames, measured and
    calibrated (frames outside the sample are not usable as references)."""
    landmarks = [face.landmarks if face is not None else None for face in source.faces]
    scores = np.array([face.score if face is not None else 0.0 for face in source.faces], np.float32)
    return build_library(source.frames, landmarks, scores, sample=library_sample(source.count))


def choose_references(source: SourceVideo, order: np.ndarray, mouth_params: np.ndarray,
                      library: MouthLibrary | None = None) -> np.ndarray:
    """Source frame whose mouth each output frame shows (int64 [T]; PARAMETRIC where none fits)."""
    library = library if library is not None else source_library(source)
    if not library.usable.any():
        return np.full(len(order), PARAMETRIC, np.int64)
    target = match_speaking_style(mouth_params, library)
    selection = select_mouths(library, target, order)
    references = np.where(selection.fallback, PARAMETRIC, selection.frames).astype(np.int64)
    log.info("dub: %d of %d output frames transplanted from %d distinct source frames, %d parametric",
             int((references >= 0).sum()), len(references), len(np.unique(references[references >= 0])),
             int((references < 0).sum()))
    return references


def shown_opening(source: SourceVideo, library: MouthLibrary, order: np.ndarray, references: np.ndarray,
                  mouth_params: np.ndarray) -> np.ndarray:
    """The lip opening each output frame shows (float [T], NaN where the frame has no face):
    the measured opening of the transplanted source mouth, or the parametric one asked for."""
    has_face = np.array([source.faces[int(i)] is not None for i in order], bool)
    refs = np.asarray(references, np.int64)
    out = np.asarray(mouth_params[: len(order), LIP_OPEN], np.float64).copy()
    transplanted = refs >= 0
    out[transplanted] = library.params[refs[transplanted], LIP_OPEN]
    out[~has_face] = np.nan
    return out


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
    references: np.ndarray | None = None,
) -> None:
    """Write the output frames: source frame order[k] showing source frame references[k]'s
    mouth (transplanted), or, where that is PARAMETRIC, its mouth set to mouth_params[k].

    Batches are pipelined: while the generator renders the next ones (RENDER_AHEAD), the
    current one is pasted and encoded in a worker thread."""
    boxes = _smoothed_boxes(source.faces)
    total = len(order)
    refs = np.full(total, PARAMETRIC, np.int64) if references is None else np.asarray(references, np.int64)
    job = _DubBatches(source, order, refs, mouth_params, boxes, stages)
    spans = batch_spans(total, batch)
    if not spans:
        return

    async def compose(start: int, stop: int, rendered: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        await asyncio.to_thread(job.write, start, stop, rendered, writer)
        await on_batch(stop)

    await pipelined(spans, job.render, compose)


@dataclass(frozen=True)
class _DubBatches:
    """One dub's batches: which output frames are transplanted, parametric or unchanged."""

    source: SourceVideo
    order: np.ndarray
    refs: np.ndarray
    mouth_params: np.ndarray
    boxes: list[CropBox | None]
    stages: Stages

    async def render(self, start: int, stop: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """(crop, mask) for every output frame in [start, stop) whose face is re-rendered."""
        crops = _BatchCrops(self.source, self.boxes)
        transplant: list[int] = []
        parametric: list[int] = []
        for k in range(start, stop):
            target, ref = int(self.order[k]), int(self.refs[k])
            if self.boxes[target] is None or ref == target:
                continue  # no face, or the frame's own mouth is the chosen one: unchanged
            (transplant if ref >= 0 and self.boxes[ref] is not None else parametric).append(k)
        still = np.zeros((stop - start, 4), np.float32)  # the video keeps its own blinks and head motion
        rendered: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if transplant:
            # crops are cut in a worker thread: the event loop keeps feeding the generator
            images, landmarks = await asyncio.to_thread(crops.stack, [int(self.order[k]) for k in transplant])
            ref_images, ref_landmarks = await asyncio.to_thread(crops.stack, [int(self.refs[k]) for k in transplant])
            out = await self.stages.generate(images, landmarks, self.mouth_params[transplant], still[:len(transplant)],
                                             reference=ref_images, reference_landmarks=ref_landmarks)
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
                _paste_changed(frame, rendered[k][0], rendered[k][1], self.boxes[self.order[k]])  # type: ignore[arg-type]
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
