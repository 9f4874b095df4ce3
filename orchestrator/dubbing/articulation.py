"""Per-speaker articulation for a dub: how this person's mouth follows speech, learned from
the source video itself. The source's own soundtrack goes through the same `audio_features`
stage as the new speech (recogniser phones fused with acoustics), and a ridge regression maps
those stage tracks, with the speech energy and its dips and onsets around each frame, onto the
mouth the video shows (the library's measured jaw and lip opening). The new speech's tracks go
through the same map, so the mouth search aims at openings this speaker makes for such sounds,
and energy dips inside speech lower the opening as much as they lowered the speaker's own (one
linear weight for all dips, most of them t, k or s with the lips apart: the map never shuts the
lips; the stage's closures, kept shut here, do).

Where the source has no usable speech (silent, too short, or the fit explains too little of
the mouth's movement), there is no map and the stage's tracks are used as they are."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.mouth_library import ACTIVITY, CLOSURE, JAW, LIP_OPEN, MouthLibrary
from preprocess.audio import FEATURE_RATE_HZ, iter_audio, loudness_gain
from preprocess.errors import MediaError

log = logging.getLogger(__name__)

FIT_COLUMNS = (JAW, LIP_OPEN)  # the mouth columns the map predicts
STAGE_COLUMNS = (JAW, LIP_OPEN, CLOSURE, ACTIVITY)  # stage tracks used as inputs
LAGS = (-2, 0, 2)  # frames: each input is read this far around the frame (the mouth leads the sound)
DIP_HALF_WINDOW = 3  # frames each side for an energy dip (a closure is a short silence inside speech)
RIDGE = 2.0  # on standardised inputs
MIN_SPEECH_FRAMES = 50  # source frames with a face and speech needed to fit (~2 s)
MIN_FIT_R2 = 0.15  # in-sample share of the opening's variance the map must explain to be used
MIN_SOUNDTRACK_S = 2.0  # a shorter soundtrack gives no map
SPEECH_ACTIVITY = 0.5  # frames the map is fitted on and applied to: the stage hears speech there


@dataclass(frozen=True)
class SpeakerMap:
    """Ridge weights per predicted column, over standardised inputs (with a bias)."""

    mean: np.ndarray  # float64 [F]
    scale: np.ndarray  # float64 [F]
    weights: np.ndarray  # float64 [F + 1, len(FIT_COLUMNS)]
    r2: np.ndarray  # float64 [len(FIT_COLUMNS)] in-sample


def source_speech(path: Path, seconds: float) -> np.ndarray | None:
    """The first `seconds` of the video's own soundtrack at the stage's rate, loudness-normalised
    as a voice is; None when it has none or it cannot be decoded (the dub goes on without a map)."""
    wanted = int(seconds * FEATURE_RATE_HZ)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        for chunk in iter_audio(path, FEATURE_RATE_HZ, seconds + 1.0):
            chunks.append(chunk[: wanted - total])
            total += chunks[-1].size
            if total >= wanted:
                break
    except MediaError as exc:
        log.info("articulation: the source's own soundtrack is not usable (%s); no speaker map", exc)
        return None
    if total < MIN_SOUNDTRACK_S * FEATURE_RATE_HZ:
        return None
    audio = np.concatenate(chunks)
    return audio * np.float32(loudness_gain(audio))


def speech_inputs(params: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Per-frame inputs [T, F]: stage tracks, energy, its dip below the local peak and its
    rise from the previous frame, each at LAGS (edges repeat the end frames)."""
    p = np.asarray(params, np.float64)
    e = np.asarray(energy, np.float64)[: p.shape[0]]
    t = p.shape[0]
    padded = np.pad(e, DIP_HALF_WINDOW, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * DIP_HALF_WINDOW + 1)
    dip = windows.max(1) - e
    rise = np.diff(e, prepend=e[:1])
    base = np.column_stack([p[:, list(STAGE_COLUMNS)], e, dip, rise])
    cols = []
    for lag in LAGS:
        index = np.clip(np.arange(t) + lag, 0, max(t - 1, 0))
        cols.append(base[index])
    return np.concatenate(cols, axis=1)


def fit_speaker(source_params: np.ndarray, source_energy: np.ndarray, library: MouthLibrary) -> SpeakerMap | None:
    """The map from the source's own speech tracks (on the source frames) to its measured
    mouth, or None when there is too little speech or the fit explains too little."""
    n = min(len(source_params), len(source_energy), library.count)
    if n < MIN_SPEECH_FRAMES:
        return None
    x = speech_inputs(source_params[:n], source_energy[:n])
    speech = np.asarray(source_params[:n, ACTIVITY]) > SPEECH_ACTIVITY
    rows = library.usable[:n] & speech
    if rows.sum() < MIN_SPEECH_FRAMES:
        log.info("articulation: %d source frames with speech and a usable mouth; no speaker map", int(rows.sum()))
        return None
    xs, y = x[rows], library.params[:n][rows][:, list(FIT_COLUMNS)].astype(np.float64)
    mean, scale = xs.mean(0), xs.std(0) + 1e-6
    design = np.column_stack([(xs - mean) / scale, np.ones(len(xs))])
    penalty = RIDGE * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    weights = np.linalg.solve(design.T @ design + penalty, design.T @ y)
    residual = y - design @ weights
    r2 = 1.0 - residual.var(0) / np.maximum(y.var(0), 1e-9)
    log.info("articulation: speaker map from %d frames, in-sample R2 jaw %.2f, opening %.2f",
             int(rows.sum()), r2[0], r2[1])
    if r2[FIT_COLUMNS.index(LIP_OPEN)] < MIN_FIT_R2:
        return None
    return SpeakerMap(mean=mean, scale=scale, weights=weights, r2=r2)


def speaker_targets(speaker: SpeakerMap, params: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """The new speech's mouth parameters with jaw and opening from the speaker's map, rescaled
    to the spread the stage asked for (a regression shrinks it) and to the stage's range (0..1),
    outside speech left as asked."""
    out = np.asarray(params, np.float32).copy()
    if out.shape[0] == 0:
        return out
    x = speech_inputs(out, energy)
    design = np.column_stack([(x - speaker.mean) / speaker.scale, np.ones(len(x))])
    predicted = design @ speaker.weights
    speech = out[:, ACTIVITY] > SPEECH_ACTIVITY
    closed = out[:, CLOSURE] > 0.5  # the stage's bilabial closures stay shut
    for k, col in enumerate(FIT_COLUMNS):
        asked, got = out[:, col].astype(np.float64), predicted[:, k]
        if speech.sum() >= 3 and got[speech].std() > 1e-6:
            got = asked[speech].mean() + (got - got[speech].mean()) * asked[speech].std() / got[speech].std()
        out[:, col] = np.where(speech & ~closed, np.clip(got, 0.0, 1.0), asked)
    return out
