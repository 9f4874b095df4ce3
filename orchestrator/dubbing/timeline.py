"""The output timeline of a dub: which source frame each output frame shows, by `sync_mode`
(SPEC section 3), and how much of the source the output needs tracked."""
from __future__ import annotations

import numpy as np

SYNC_MODES = ("bounce", "loop", "cut_off", "silence")
LIBRARY_MIN_FRAMES = 150  # frames tracked for the mouth library even when the output shows fewer (~6 s)


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
