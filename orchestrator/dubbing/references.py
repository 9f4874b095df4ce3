"""Reference choice for a dub: the person's own mouth library (a bounded sample of the
tracked source) and, for every output frame, the source frame whose mouth it shows
(Video Rewrite re-synthesis, `mouth_library`/`mouth_select`), opened wider where the speech
asks for more than the library shows, or PARAMETRIC where the library has no such shape."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from orchestrator.dubbing.tracking import SourceVideo
from orchestrator.mouth_library import LIP_OPEN, MouthLibrary, build_library
from orchestrator.mouth_select import match_speaking_style, select_mouths, widen_selection

log = logging.getLogger(__name__)

PARAMETRIC = -1  # `references` entry: no library mouth fits, the parametric generator renders
LIBRARY_MAX_FRAMES = 750  # the library is an even sample of runs from at most this many frames (~30 s)
LIBRARY_RUN_FRAMES = 25  # sampled in runs of this many consecutive frames (mouth motion stays measurable)
MIN_OPENING_IOD = 0.01  # a mouth is opened wider only by more than this (less is under a pixel; not worth a render)


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


@dataclass(frozen=True)
class MouthChoice:
    """What each output frame's mouth is made of."""

    references: np.ndarray  # int64 [T]: source frame whose mouth is shown, PARAMETRIC where none fits
    opening: np.ndarray  # float32 [T]: that mouth opened this much wider (inner-lip gap, IODs; 0: as recorded)
    opening_params: np.ndarray  # float32 [T]: the same in lip_open parameter units


def choose_mouths(source: SourceVideo, order: np.ndarray, mouth_params: np.ndarray,
                  library: MouthLibrary | None = None) -> MouthChoice:
    """Source frame whose mouth each output frame shows, and how much wider it opens."""
    library = library if library is not None else source_library(source)
    none = np.zeros(len(order), np.float32)
    if not library.usable.any():
        return MouthChoice(np.full(len(order), PARAMETRIC, np.int64), none, none)
    target = match_speaking_style(mouth_params, library)
    selection = select_mouths(library, target, order)
    fallback, extra = widen_selection(library, target, selection)
    references = np.where(fallback, PARAMETRIC, selection.frames).astype(np.int64)
    opening = (extra * library.calibration.span[LIP_OPEN]).astype(np.float32)
    extra = np.where(opening > MIN_OPENING_IOD, extra, 0.0).astype(np.float32)
    opening = np.where(opening > MIN_OPENING_IOD, opening, 0.0).astype(np.float32)
    log.info("dub: %d of %d output frames transplanted from %d distinct source frames (%d opened wider, "
             "by up to %.2f IOD), %d parametric", int((references >= 0).sum()), len(references),
             len(np.unique(references[references >= 0])), int((opening > 0).sum()), float(opening.max(initial=0.0)),
             int((references < 0).sum()))
    log.debug("dub: openings %s at output frames %s", np.round(opening[opening > 0], 3).tolist(),
              np.flatnonzero(opening > 0).tolist())
    return MouthChoice(references, opening, extra)


def choose_references(source: SourceVideo, order: np.ndarray, mouth_params: np.ndarray,
                      library: MouthLibrary | None = None) -> np.ndarray:
    """Source frame whose mouth each output frame shows (int64 [T]; PARAMETRIC where none fits)."""
    return choose_mouths(source, order, mouth_params, library).references


def shown_opening(source: SourceVideo, library: MouthLibrary, order: np.ndarray, references: np.ndarray,
                  mouth_params: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    """The lip opening each output frame shows (float [T], NaN where the frame has no face):
    the measured opening of the transplanted source mouth plus the extra opening it is given
    (`MouthChoice.opening_params`), or the parametric one asked for."""
    has_face = np.array([source.faces[int(i)] is not None for i in order], bool)
    refs = np.asarray(references, np.int64)
    out = np.asarray(mouth_params[: len(order), LIP_OPEN], np.float64).copy()
    transplanted = refs >= 0
    out[transplanted] = library.params[refs[transplanted], LIP_OPEN]
    if extra is not None:
        out[transplanted] += np.asarray(extra, np.float64)[: len(order)][transplanted]
    out[~has_face] = np.nan
    return out
