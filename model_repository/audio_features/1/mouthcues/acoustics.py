"""Language-independent acoustic tracks at 100 Hz: loudness, voice activity, voicing and spectral cues.

These drive the mouth wherever the phone decoder is unsure (any language, noise, singing)
and gate it everywhere: no sound, no opening. Audio is analysed in fixed blocks so memory
stays flat in the audio length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d, minimum_filter1d, uniform_filter1d

SAMPLE_RATE_HZ = 16_000
TRACK_RATE_HZ = 100
HOP_SAMPLES = SAMPLE_RATE_HZ // TRACK_RATE_HZ  # 160: 10 ms
WINDOW_SAMPLES = 400  # 25 ms
FFT_SIZE = 512
BLOCK_FRAMES = 3_000  # 30 s of audio per analysis block

_FREQS_HZ = np.fft.rfftfreq(FFT_SIZE, 1.0 / SAMPLE_RATE_HZ)
_LOW_BAND = (_FREQS_HZ >= 250) & (_FREQS_HZ < 1000)  # first formant region
_MID_BAND = (_FREQS_HZ >= 1000) & (_FREQS_HZ < 2800)  # second formant region
_HIGH_BAND = (_FREQS_HZ >= 4000) & (_FREQS_HZ < 8000)  # frication noise
_SPEECH_BAND = (_FREQS_HZ >= 80) & (_FREQS_HZ < 8000)
_WINDOW = np.hanning(WINDOW_SAMPLES).astype(np.float32)
# Autocorrelation of the window itself, to unbias the voicing estimate at long lags.
_WINDOW_ACF = np.correlate(_WINDOW, _WINDOW, mode="full")[WINDOW_SAMPLES - 1 :]
_PITCH_LAGS = slice(SAMPLE_RATE_HZ // 400, SAMPLE_RATE_HZ // 70)  # 70-400 Hz pitch

ACTIVITY_HOLD_FRAMES = 15  # 150 ms
ACTIVITY_PREROLL_FRAMES = 6  # 60 ms
SILENCE_FLOOR_DB = -70.0
MIN_DYNAMIC_RANGE_DB = 25.0


@dataclass(frozen=True)
class AcousticTracks:
    """Per-10 ms acoustic measurements; frame i is centred at i / TRACK_RATE_HZ seconds."""

    level_db: np.ndarray  # RMS level in dBFS
    energy: np.ndarray  # normalised loudness 0..1
    activity: np.ndarray  # voice activity 0..1 (soft, with hangover)
    voicing: np.ndarray  # periodicity 0..1
    fricative: np.ndarray  # high-band noise share 0..1
    frontness: np.ndarray  # F2-region share 0..1 (spread vowels high, rounded low)

    @property
    def n_frames(self) -> int:
        return int(self.level_db.shape[0])


def n_track_frames(n_samples: int) -> int:
    """How many 10 ms track frames cover n_samples of audio."""
    return int(np.ceil(n_samples / HOP_SAMPLES))


def _smoothstep(x: np.ndarray, low: float, high: float) -> np.ndarray:
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _analyse_block(audio: np.ndarray, first: int, last: int) -> np.ndarray:
    """Raw measurements [last-first, 6] for frames first..last-1 (window centred on i*HOP)."""
    half = WINDOW_SAMPLES // 2
    start = first * HOP_SAMPLES - half
    stop = (last - 1) * HOP_SAMPLES + half
    lo, hi = max(start, 0), min(stop, audio.shape[0])
    padded = np.zeros(stop - start, dtype=np.float32)
    padded[lo - start : hi - start] = audio[lo:hi]
    frames = np.lib.stride_tricks.sliding_window_view(padded, WINDOW_SAMPLES)[::HOP_SAMPLES]
    frames = frames[: last - first] * _WINDOW
    power = np.abs(np.fft.rfft(frames, FFT_SIZE, axis=1)) ** 2
    speech = power[:, _SPEECH_BAND].sum(axis=1) + 1e-12
    low = power[:, _LOW_BAND].sum(axis=1)
    mid = power[:, _MID_BAND].sum(axis=1)
    high = power[:, _HIGH_BAND].sum(axis=1)
    level_db = 10.0 * np.log10(np.mean(frames**2, axis=1) / np.mean(_WINDOW**2) + 1e-10)
    acf = np.fft.irfft(power, FFT_SIZE, axis=1)
    unbias = _WINDOW_ACF[_PITCH_LAGS] / _WINDOW_ACF[0]
    acf = acf[:, _PITCH_LAGS] / (acf[:, :1] + 1e-12) / unbias
    voicing = np.clip(acf.max(axis=1), 0.0, 1.0)
    return np.stack(
        [level_db, voicing, high / speech, mid / (low + mid + 1e-12), low / speech, speech], axis=1
    )


def _normalise_energy(level_db: np.ndarray) -> np.ndarray:
    """Map dB to 0..1 between a robust noise floor and a robust peak of this recording."""
    if level_db.size == 0:
        return level_db.copy()
    floor_db = max(float(np.percentile(level_db, 10)), SILENCE_FLOOR_DB)
    peak_db = max(float(np.percentile(level_db, 99)), floor_db + MIN_DYNAMIC_RANGE_DB)
    return np.clip((level_db - floor_db) / (peak_db - floor_db), 0.0, 1.0)


def _voice_activity(energy: np.ndarray, level_db: np.ndarray) -> np.ndarray:
    if energy.size == 0:
        return energy.copy()
    raw = _smoothstep(energy, 0.15, 0.35) * _smoothstep(level_db, -60.0, -50.0)
    # Drop clicks shorter than 50 ms, then hold 150 ms after sound (stop closures inside
    # words stay "active") and open 60 ms before it (the mouth prepares, never lags).
    opened = maximum_filter1d(minimum_filter1d(raw, 5), 5)
    held = np.lib.stride_tricks.sliding_window_view(
        np.pad(opened, (ACTIVITY_HOLD_FRAMES, ACTIVITY_PREROLL_FRAMES)),
        ACTIVITY_HOLD_FRAMES + ACTIVITY_PREROLL_FRAMES + 1,
    ).max(axis=1)
    return np.clip(uniform_filter1d(held, 3), 0.0, 1.0)


def analyse_audio(audio: np.ndarray) -> AcousticTracks:
    """Acoustic tracks of 16 kHz mono float audio in [-1, 1]."""
    audio = np.asarray(audio, dtype=np.float32)
    n = n_track_frames(audio.shape[0])
    raw = np.zeros((n, 6), dtype=np.float64)
    for first in range(0, n, BLOCK_FRAMES):
        last = min(first + BLOCK_FRAMES, n)
        raw[first:last] = _analyse_block(audio, first, last)
    level_db, voicing, high_share, mid_share, low_share = (raw[:, k] for k in range(5))
    energy = _normalise_energy(level_db)
    activity = _voice_activity(energy, level_db)
    voiced = _smoothstep(voicing, 0.35, 0.7) * _smoothstep(low_share, 0.15, 0.4)
    fricative = _smoothstep(high_share, 0.2, 0.55) * _smoothstep(energy, 0.1, 0.3)
    frontness = _smoothstep(mid_share, 0.15, 0.6)
    return AcousticTracks(
        level_db=level_db,
        energy=energy,
        activity=activity,
        voicing=uniform_filter1d(voiced, 3),
        fricative=uniform_filter1d(fricative, 3),
        frontness=uniform_filter1d(frontness, 5),
    )


def quiet_cut_points(tracks: AcousticTracks, chunk_frames: int, search_frames: int,
                     first: int = 0, last: int | None = None) -> list[int]:
    """Frame indices splitting the audio (or its frames first..last) into ~chunk_frames
    pieces, each cut at the quietest frame near the nominal boundary so the phone decoder
    is rarely cut mid-phone."""
    cuts = [first]
    n = tracks.n_frames if last is None else last
    while n - cuts[-1] > chunk_frames + search_frames:
        nominal = cuts[-1] + chunk_frames
        lo, hi = nominal - search_frames, min(nominal + search_frames, n - 1)
        cuts.append(lo + int(np.argmin(tracks.level_db[lo:hi])))
    cuts.append(n)
    return cuts
