"""The quality block a job carries: measured by the service on what it rendered,
so a customer can flag a bad result without watching it.

- sync: the mouth opening shown in each output frame (for a dub, the measured opening of
  the source mouth transplanted there; for a portrait, the opening the generator was asked
  for) against the speech energy under the frame: the lag with the highest Pearson
  correlation within ±MAX_SYNC_LAG_FRAMES (positive: the mouth leads the sound) and a
  confidence in the spirit of SyncNet's (Chung & Zisserman 2016): that peak correlation
  minus the median correlation over ±BASELINE_LAG_FRAMES (a mouth that follows the speech
  has one clear peak; an unrelated one has none). The baseline reaches well past the
  lags searched: mouth and speech tracks are smooth over a few frames, so nearby lags
  correlate almost as well as the peak and would hide it;
- faces: output frames that show a tracked face, and the output's frame count."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from proto import lipsync_pb2

MAX_SYNC_LAG_FRAMES = 5
BASELINE_LAG_FRAMES = 15  # as SyncNet's offset search (±15 frames at 25 fps, ±0.6 s)
MIN_SYNC_FRAMES = 8  # fewer voiced frames with a face than this: no sync is measured


@dataclass(frozen=True)
class Quality:
    sync_offset_frames: int
    sync_confidence: float
    faces_found: int
    frames: int

    def to_proto(self) -> lipsync_pb2.JobQuality:
        return lipsync_pb2.JobQuality(sync_offset_frames=self.sync_offset_frames,
                                      sync_confidence=self.sync_confidence,
                                      faces_found=self.faces_found, frames=self.frames)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < MIN_SYNC_FRAMES:
        return float("nan")
    x, y = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 1e-12 else 0.0


def sync_offset(opening: np.ndarray, energy: np.ndarray, max_lag: int = MAX_SYNC_LAG_FRAMES,
                baseline_lag: int = BASELINE_LAG_FRAMES) -> tuple[int, float]:
    """(offset in frames, confidence): the best lag within ±max_lag of opening against
    energy (positive: the mouth leads) and its correlation minus the median over ±baseline_lag;
    (0, 0.0) when there is too little speech or face to measure."""
    count = min(opening.size, energy.size)
    mouth = np.asarray(opening[:count], np.float64)
    energy = np.asarray(energy[:count], np.float64)
    if count == 0:
        return 0, 0.0
    correlations: dict[int, float] = {}
    for lag in range(-max(max_lag, baseline_lag), max(max_lag, baseline_lag) + 1):
        # lag > 0: the mouth at t matches the sound at t + lag (the mouth leads)
        a, b = (mouth[: count - lag], energy[lag:]) if lag >= 0 else (mouth[-lag:], energy[: count + lag])
        value = _pearson(a, b)
        if np.isfinite(value):
            correlations[lag] = value
    if not correlations:
        return 0, 0.0
    searched = [lag for lag in correlations if abs(lag) <= max_lag]
    if not searched:
        return 0, 0.0
    best = max(searched, key=lambda lag: (correlations[lag], -abs(lag)))
    confidence = correlations[best] - float(np.median(list(correlations.values())))
    return int(best), round(max(0.0, confidence), 4)


def measure(opening: np.ndarray, energy: np.ndarray, faces_found: int, frames: int) -> Quality:
    """The quality block from the opening shown per output frame (NaN where no face)."""
    offset, confidence = sync_offset(opening, energy)
    return Quality(sync_offset_frames=offset, sync_confidence=confidence, faces_found=int(faces_found),
                   frames=int(frames))
