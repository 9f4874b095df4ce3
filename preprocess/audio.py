"""Audio decoding and normalisation with PyAV: any container/codec to float32 PCM at a
chosen rate, mono, loudness-normalised; plus the length rules that place voices in time."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from preprocess.errors import MediaError

FEATURE_RATE_HZ = 16_000   # what the audio_features stage takes
OUTPUT_RATE_HZ = 48_000    # what goes into the AAC track
TARGET_RMS_DBFS = -20.0
PEAK_LIMIT = 0.95


def decode_audio(path: Path, rate_hz: int, max_duration_s: float) -> np.ndarray:
    """Decode the first audio stream to mono float32 at `rate_hz`, refusing long audio early."""
    chunks: list[np.ndarray] = []
    total = 0
    limit = int(max_duration_s * rate_hz) + rate_hz
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise MediaError("no_audio_stream", "The audio file has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_hz)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    total += chunk.size
                if total > limit:
                    raise MediaError("audio_too_long", f"Audio is longer than {max_duration_s:.0f} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise MediaError("unsupported_media", f"The audio could not be decoded: {exc}") from exc
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise MediaError("empty_audio", "The audio is empty")
    if samples.size > max_duration_s * rate_hz + rate_hz // 100:
        raise MediaError("audio_too_long", f"Audio is longer than {max_duration_s:.0f} s")
    return samples


def normalise_loudness(samples: np.ndarray) -> np.ndarray:
    """Scale speech to a common RMS level (measured on its voiced part) with a peak limit."""
    if samples.size == 0:
        return samples
    frame = 1024
    usable = samples[: samples.size // frame * frame].reshape(-1, frame) if samples.size >= frame else samples[None]
    rms = np.sqrt(np.mean(usable.astype(np.float64) ** 2, axis=1))
    voiced = rms[rms > max(1e-4, float(np.percentile(rms, 50)) * 0.5)]
    level = float(np.sqrt(np.mean(voiced**2))) if voiced.size else 0.0
    if level < 1e-5:
        return samples.astype(np.float32)  # silence stays silence
    gain = 10 ** (TARGET_RMS_DBFS / 20) / level
    peak = float(np.max(np.abs(samples))) * gain
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
    return (samples * gain).astype(np.float32)


def resample_linear(samples: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Band-limited enough for feature extraction when going down by an integer-ish ratio."""
    if from_hz == to_hz:
        return samples
    from scipy.signal import resample_poly  # noqa: PLC0415 - only needed here

    from math import gcd  # noqa: PLC0415

    g = gcd(from_hz, to_hz)
    return resample_poly(samples, to_hz // g, from_hz // g).astype(np.float32)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Pad with silence or cut to exactly `length` samples."""
    if samples.size >= length:
        return samples[:length]
    return np.concatenate([samples, np.zeros(length - samples.size, np.float32)])
