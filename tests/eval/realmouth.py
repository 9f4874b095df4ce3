"""A lip-sync reference that needs no recogniser: when a case is driven by a real video's own
speech, the output's mouth opening is correlated frame by frame with that speaker's real
mouth opening (the same face mesh measures both); and the sharpness of the output's mouth
against the source video's own mouth (variance of the Laplacian on a scale-free mouth crop)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tests.eval import sync

MAX_REAL_LAG_FRAMES = 2
# MediaPipe mesh outer-lip contour: the mouth box is measured around it.
OUTER_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
MOUTH_CROP_WIDTH_PX = 96  # the crop every mouth is resampled to: sharpness is compared scale-free
MOUTH_BOX_MARGIN = 0.25   # of the lip width, on each side
MOUTH_BOX_ASPECT = 0.75   # height / width of the box


@dataclass(frozen=True)
class RealMouthScore:
    corr_lag0: float
    best_lag: int  # positive: the output's mouth leads the real one
    corr_best: float


def resample_track(values: np.ndarray, fps: float, target_fps: float, count: int) -> np.ndarray:
    """A per-frame track at fps, read at target_fps frame times (linear, NaN outside or where missing)."""
    times = np.arange(count) / target_fps
    source_times = np.arange(values.size) / fps
    finite = np.isfinite(values)
    if finite.sum() < 2:
        return np.full(count, np.nan)
    out = np.interp(times, source_times[finite], values[finite], left=np.nan, right=np.nan)
    return out


def real_mouth_score(output_opening: np.ndarray, real_opening: np.ndarray,
                     max_lag: int = MAX_REAL_LAG_FRAMES) -> RealMouthScore:
    """Pearson of the two opening tracks (same frame times) at lag 0 and at the best lag within ±max_lag."""
    count = min(output_opening.size, real_opening.size)
    out, real = output_opening[:count], real_opening[:count]
    best_lag, best = 0, float("nan")
    for lag in range(-max_lag, max_lag + 1):
        a, b = (out[lag:], real[: count - lag]) if lag >= 0 else (out[: count + lag], real[-lag:])
        value = sync.pearson(a, b)
        if np.isfinite(value) and (not np.isfinite(best) or value > best):
            best_lag, best = lag, value
    return RealMouthScore(sync.pearson(out, real), -best_lag, best)


def mouth_crop(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """Grey mouth crop resampled to MOUTH_CROP_WIDTH_PX wide (area averaging), None off-frame."""
    lips = landmarks[list(OUTER_LIPS), :2]
    if not np.isfinite(lips).all():
        return None
    lo, hi = lips.min(0), lips.max(0)
    width = (hi[0] - lo[0]) * (1 + 2 * MOUTH_BOX_MARGIN)
    height = width * MOUTH_BOX_ASPECT
    cx, cy = (lo + hi) / 2
    x0, y0 = int(round(cx - width / 2)), int(round(cy - height / 2))
    x1, y1 = int(round(cx + width / 2)), int(round(cy + height / 2))
    h, w = frame.shape[:2]
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h or x1 - x0 < 8:
        return None
    grey = cv2.cvtColor(np.ascontiguousarray(frame[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    size = (MOUTH_CROP_WIDTH_PX, int(round(MOUTH_CROP_WIDTH_PX * MOUTH_BOX_ASPECT)))
    interpolation = cv2.INTER_AREA if x1 - x0 >= MOUTH_CROP_WIDTH_PX else cv2.INTER_CUBIC
    return cv2.resize(grey, size, interpolation=interpolation)


def sharpness(frame: np.ndarray, landmarks: np.ndarray) -> float:
    """Variance of the Laplacian of the scale-free mouth crop (NaN when there is no mouth)."""
    crop = mouth_crop(frame, landmarks)
    if crop is None:
        return float("nan")
    return float(cv2.Laplacian(crop.astype(np.float32), cv2.CV_32F).var())


def sharpness_ratio(output: list[float], source: list[float]) -> float:
    """Mean output mouth sharpness over mean source mouth sharpness, on frames where both exist."""
    pairs = np.array([(o, s) for o, s in zip(output, source, strict=False) if np.isfinite(o) and np.isfinite(s)])
    if pairs.size == 0 or pairs[:, 1].mean() <= 0:
        return float("nan")
    return float(pairs[:, 0].mean() / pairs[:, 1].mean())
