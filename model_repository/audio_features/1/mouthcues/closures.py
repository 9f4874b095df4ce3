"""Bilabial closures (/p b m/) placed directly on video frames.

A closure is where the lips are shut, so it is shown at its own time (no lead): on every frame
shown while it sounds (frame centre inside it, or the frame holding its middle) and on every
frame it covers at least half of once stretched back to MIN_CLOSURE_S: short closures are
held longer by shutting the lips earlier, as speakers do, not by opening them late. At
least MIN_CLOSURE_FRAMES frames are shut, so every closure is seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .phones import PhoneSegment
from .visemes import BILABIALS

MIN_CLOSURE_S = 0.08  # 2 frames at 25 fps
MIN_CLOSURE_FRAMES = 2
MERGE_GAP_S = 0.02  # closures closer than this are one closure ("i'm many")
MIN_ACTIVITY = 0.2  # ignore /p b m/ the decoder hears where there is no voice activity


def closure_intervals(
    segments: Sequence[PhoneSegment], activity: np.ndarray, track_rate_hz: float
) -> list[tuple[float, float]]:
    """Merged (start_s, end_s) of the bilabial phones heard during voice activity."""
    spans = sorted((s.start_s, s.end_s) for s in segments if s.phone.upper().rstrip("012") in BILABIALS)
    merged: list[tuple[float, float]] = []
    for start_s, end_s in spans:
        if merged and start_s - merged[-1][1] < MERGE_GAP_S:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end_s))
        else:
            merged.append((start_s, end_s))
    out = []
    for start_s, end_s in merged:
        lo = max(int(start_s * track_rate_hz), 0)
        hi = max(int(np.ceil(end_s * track_rate_hz)), lo + 1)
        if activity[lo:hi].size == 0 or float(activity[lo:hi].mean()) < MIN_ACTIVITY:
            continue
        out.append((start_s, end_s))
    return out


def closure_frames(intervals: Sequence[tuple[float, float]], n_frames: int, fps: float) -> np.ndarray:
    """[n_frames] 0/1: video frame k (shown from k / fps to (k + 1) / fps) has the lips shut."""
    closed = np.zeros(n_frames, dtype=np.float64)
    for sound_start_s, end_s in intervals:
        start_s = max(min(sound_start_s, end_s - MIN_CLOSURE_S), 0.0)
        first = max(int(np.floor(start_s * fps)) - 1, 0)
        last = min(int(np.ceil(end_s * fps)) + 1, n_frames)
        if first >= last:
            continue
        frames = np.arange(first, last)
        overlap = np.clip(np.minimum(end_s, (frames + 1) / fps) - np.maximum(start_s, frames / fps), 0.0, None) * fps
        distance_s = np.abs((frames + 0.5) / fps - 0.5 * (start_s + end_s))
        order = np.lexsort((distance_s, -overlap))  # most covered first, then nearest
        centre_s = (frames + 0.5) / fps
        sounding = (centre_s >= sound_start_s) & (centre_s <= end_s)
        sounding |= frames == int(0.5 * (sound_start_s + end_s) * fps)
        chosen = (overlap >= 0.5 - 1e-6) | sounding
        for index in order:  # top up to MIN_CLOSURE_FRAMES with the most covered frames
            if np.count_nonzero(chosen) >= MIN_CLOSURE_FRAMES:
                break
            chosen[index] = True
        closed[frames[chosen]] = 1.0
    return closed
