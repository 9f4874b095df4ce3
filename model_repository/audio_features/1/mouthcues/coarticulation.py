"""Co-articulation: timed phones → continuous mouth-shape tracks at 100 Hz.

Technique: dominance-function blending of viseme targets (Cohen & Massaro 1993, "Modeling
coarticulation in synthetic visual speech"). Each phone's dominance is flat over its own
interval and decays exponentially outside it, more slowly before it than after it, so the
mouth anticipates upcoming sounds instead of lagging them. The blend is followed by a
zero-phase critically damped smoother; bilabial closures are imposed afterwards (on the video
frames, `closures.py`) so that short /p b m/ are never smoothed away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import filtfilt

from .phones import PhoneSegment
from .visemes import CLOSURE, JAW, LIP_OPEN, N_SHAPE, REST, viseme_for

TRACK_RATE_HZ = 100
ANTICIPATION_FACTOR = 0.6  # dominance decays at 0.6x its rate before a phone: anticipation
CARRYOVER_FACTOR = 1.4  # and at 1.4x after it: little carry-over
DOMINANCE_CUTOFF = 1e-3  # dominance below this is not evaluated (bounded work per phone)
REST_FLOOR = 1e-3  # weak everywhere-present rest dominance: keeps the blend defined
SMOOTHING_TIME_CONSTANT_S = 0.01


@dataclass(frozen=True)
class PhoneTracks:
    """Phone-driven tracks at 100 Hz."""

    shape: np.ndarray  # [N, N_SHAPE] blended viseme targets
    speech_weight: np.ndarray  # [N] share of dominance held by speech phones (0 = silence/noise)


def blend_dominance(segments: Sequence[PhoneSegment], n_frames: int) -> PhoneTracks:
    """Blend viseme targets of timed phones with Cohen-Massaro dominance functions."""
    numerator = np.zeros((n_frames, N_SHAPE))
    denominator = np.full((n_frames, N_SHAPE), REST_FLOOR)
    numerator += REST_FLOOR * REST.target
    speech = np.zeros(n_frames)
    total = np.full(n_frames, REST_FLOOR)
    times_s = np.arange(n_frames) / TRACK_RATE_HZ
    for segment in segments:
        viseme = viseme_for(segment.phone)
        rate_before = viseme.rate_per_s * ANTICIPATION_FACTOR
        rate_after = viseme.rate_per_s * CARRYOVER_FACTOR
        reach_s = -np.log(DOMINANCE_CUTOFF) / rate_before
        first = max(int((segment.start_s - reach_s) * TRACK_RATE_HZ), 0)
        last = min(int((segment.end_s + reach_s * rate_before / rate_after) * TRACK_RATE_HZ) + 1, n_frames)
        if first >= last:
            continue
        t = times_s[first:last]
        before_s = np.maximum(segment.start_s - t, 0.0)
        after_s = np.maximum(t - segment.end_s, 0.0)
        falloff = np.exp(-rate_before * before_s - rate_after * after_s)
        dominance = falloff[:, None] * viseme.strength[None, :]
        numerator[first:last] += dominance * viseme.target[None, :]
        denominator[first:last] += dominance
        weight = falloff * float(viseme.strength.mean())
        total[first:last] += weight
        if viseme.is_speech:
            speech[first:last] += weight
    return PhoneTracks(numerator / denominator, speech / total)


def smooth_critically_damped(
    tracks: np.ndarray, time_constant_s: float = SMOOTHING_TIME_CONSTANT_S
) -> np.ndarray:
    """Zero-phase (forward-backward) critically damped second-order smoothing along axis 0.

    Zero phase matters: a causal smoother would make the mouth lag the sound."""
    pole = float(np.exp(-1.0 / (TRACK_RATE_HZ * time_constant_s)))
    b = np.array([(1.0 - pole) ** 2])
    a = np.array([1.0, -2.0 * pole, pole * pole])
    if tracks.shape[0] < 4:
        return tracks.copy()
    return filtfilt(b, a, tracks, axis=0, padlen=min(9, tracks.shape[0] - 1))


def impose_closures(shape: np.ndarray, closure_mask: np.ndarray) -> np.ndarray:
    """Force lips shut where closure_mask is set (weight 0..1) and keep the shape consistent."""
    out = shape.copy()
    out[:, CLOSURE] = np.maximum(out[:, CLOSURE], closure_mask)
    # A pressed lip has no inner gap, and the jaw is nearly shut.
    out[:, LIP_OPEN] *= 1.0 - out[:, CLOSURE]
    out[:, JAW] *= 1.0 - 0.8 * out[:, CLOSURE]
    return out
