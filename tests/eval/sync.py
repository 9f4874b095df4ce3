"""Lip-sync metrics from a mouth-opening track and the speech: bilabial-closure ROC AUC
(mouth shut on P/B/M, open on open vowels) and the lagged correlation of mouth opening
with speech energy, in the spirit of the landmark-based sync measures of Chung & Zisserman
("Out of time", ACCV 2016) without a learned model."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MOUTH_UPPER, MOUTH_LOWER = 13, 14  # MediaPipe mesh: inner lip, upper and lower middle
EYE_RIGHT, EYE_LEFT = 33, 263  # outer eye corners: the face-size scale
BILABIALS = frozenset({"P", "B", "M"})
OPEN_VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH"})
MAX_LAG_FRAMES = 8
ENERGY_FLOOR_DB = 50.0  # energies more than this below the loudest frame are clipped


@dataclass(frozen=True)
class Phone:
    label: str
    start_s: float
    end_s: float

    @property
    def mid_s(self) -> float:
        return (self.start_s + self.end_s) / 2


@dataclass(frozen=True)
class SyncScore:
    bilabial_auc: float
    bilabial_frames: int
    open_frames: int
    corr_lag0: float
    best_lag_frames: int  # positive: the mouth leads the sound
    corr_best: float


def face_scale(landmarks: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance per frame, [T] from [T, 468, 3]."""
    return np.linalg.norm(landmarks[:, EYE_LEFT, :2] - landmarks[:, EYE_RIGHT, :2], axis=-1)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap over face scale per frame; NaN where no face was found."""
    gap = np.linalg.norm(landmarks[:, MOUTH_LOWER, :2] - landmarks[:, MOUTH_UPPER, :2], axis=-1)
    return gap / np.maximum(face_scale(landmarks), 1e-6)


def roc_auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (the Mann-Whitney U)."""
    pos = np.asarray(positive_scores, np.float64)
    neg = np.asarray(negative_scores, np.float64)
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def phone_openings(opening: np.ndarray, phones: Sequence[Phone], labels: frozenset[str], fps: float) -> np.ndarray:
    """Mean opening over the frames shown during each phone with one of `labels` (the frame
    at its middle when the phone is shorter than a frame). Calibrated on the real videos:
    mid-frames alone, or windows widened on one side, gave noisier or biased AUCs."""
    values = []
    for phone in phones:
        if phone.label not in labels:
            continue
        first = int(np.ceil(phone.start_s * fps - 0.5))
        last = int(np.ceil(phone.end_s * fps - 0.5))  # frame i counts when (i + 0.5) / fps is inside
        frames = np.arange(first, last) if last > first else np.array([int(phone.mid_s * fps)])
        frames = frames[(frames >= 0) & (frames < opening.size)]
        picked = opening[frames]
        if np.isfinite(picked).any():
            values.append(float(np.nanmean(picked)))
    return np.array(values, np.float64)


def bilabial_auc(opening: np.ndarray, phones: Sequence[Phone], fps: float) -> tuple[float, int, int]:
    """AUC of score = -opening separating bilabial phones (P, B, M) from open vowels."""
    closed = phone_openings(opening, phones, BILABIALS, fps)
    opened = phone_openings(opening, phones, OPEN_VOWELS, fps)
    return roc_auc(-closed, -opened), int(closed.size), int(opened.size)


def frame_energy_db(samples: np.ndarray, rate_hz: int, fps: float, frame_count: int) -> np.ndarray:
    """RMS level (dB) of the audio while each video frame is shown, floored below the peak."""
    energy = np.empty(frame_count, np.float64)
    for i in range(frame_count):
        chunk = samples[int(i * rate_hz / fps): int((i + 1) * rate_hz / fps)]
        rms = float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64)))) if chunk.size else 0.0
        energy[i] = 20 * np.log10(rms + 1e-9)
    return np.maximum(energy, energy.max() - ENERGY_FLOOR_DB) if frame_count else energy


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation over the frames where both are finite; 0 when either is constant."""
    mask = np.isfinite(a) & np.isfinite(b)
    if mask.sum() < 3:
        return float("nan")
    x, y = a[mask] - a[mask].mean(), b[mask] - b[mask].mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 1e-12 else 0.0


def lagged_correlations(mouth: np.ndarray, energy: np.ndarray, max_lag: int = MAX_LAG_FRAMES) -> dict[int, float]:
    """corr(mouth[t], energy[t + lag]) for lag in [-max_lag, max_lag]; lag > 0: mouth leads."""
    n = min(mouth.size, energy.size)
    out: dict[int, float] = {}
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            out[lag] = pearson(mouth[: n - lag], energy[lag:n])
        else:
            out[lag] = pearson(mouth[-lag:n], energy[: n + lag])
    return out


def best_lag(correlations: dict[int, float]) -> tuple[int, float]:
    """The lag with the highest correlation (the smallest |lag| among equals)."""
    finite = {lag: c for lag, c in correlations.items() if np.isfinite(c)}
    if not finite:
        return 0, float("nan")
    lag = max(sorted(finite, key=abs), key=lambda k: finite[k])
    return lag, finite[lag]


def score_sync(opening: np.ndarray, phones: Sequence[Phone], samples: np.ndarray, rate_hz: int,
               fps: float) -> SyncScore:
    """All sync numbers of one mouth track against one voice on the same timeline."""
    auc, n_closed, n_open = bilabial_auc(opening, phones, fps)
    energy = frame_energy_db(samples, rate_hz, fps, opening.size)
    correlations = lagged_correlations(opening, energy)
    lag, corr = best_lag(correlations)
    return SyncScore(auc, n_closed, n_open, correlations[0], lag, corr)
