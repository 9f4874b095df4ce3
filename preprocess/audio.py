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
    """Decode the first audio stream to mono float32 at `rate_hz`, refusing long audio early.

    Samples go straight into one growing buffer (doubling), so the peak is about twice
    the decoded audio rather than a list of chunks plus their concatenation."""
    limit = int(max_duration_s * rate_hz) + rate_hz
    buffer = np.empty(rate_hz * 30, np.float32)
    total = 0

    def append(chunk: np.ndarray) -> None:
        nonlocal buffer, total
        if total + chunk.size > buffer.size:
            grown = np.empty(max(buffer.size * 2, total + chunk.size), np.float32)
            grown[:total] = buffer[:total]
            buffer = grown
        buffer[total : total + chunk.size] = chunk
        total += chunk.size

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise MediaError("no_audio_stream", "The audio file has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_hz)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    append(out.to_ndarray().reshape(-1))
                if total > limit:
                    raise MediaError("audio_too_long", f"Audio is longer than {max_duration_s:.0f} s")
            for out in resampler.resample(None):
                append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise MediaError("unsupported_media", f"The audio could not be decoded: {exc}") from exc
    if total == 0:
        raise MediaError("empty_audio", "The audio is empty")
    if total > max_duration_s * rate_hz + rate_hz // 100:
        raise MediaError("audio_too_long", f"Audio is longer than {max_duration_s:.0f} s")
    return buffer[:total].copy() if buffer.size > total * 1.25 else buffer[:total]


def loudness_gain(samples: np.ndarray) -> float:
    """Gain that brings speech to a common RMS level (measured on its voiced part), with a
    peak limit; 1.0 for silence. Computed in frames, without copying the signal."""
    frame = 1024
    count = samples.size // frame
    if count == 0:
        frames = samples[None, :].astype(np.float64)
    else:
        frames = samples[: count * frame].reshape(count, frame)
    rms = np.sqrt(np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / frames.shape[1])
    voiced = rms[rms > max(1e-4, float(np.percentile(rms, 50)) * 0.5)]
    level = float(np.sqrt(np.mean(voiced**2))) if voiced.size else 0.0
    if level < 1e-5:
        return 1.0  # silence stays silence
    gain = 10 ** (TARGET_RMS_DBFS / 20) / level
    peak = float(np.max(np.abs(samples))) * gain
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
    return gain


def normalise_loudness(samples: np.ndarray) -> np.ndarray:
    """Scale speech to a common RMS level with a peak limit (a new float32 array)."""
    if samples.size == 0:
        return samples
    return (samples * np.float32(loudness_gain(samples))).astype(np.float32, copy=False)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Pad with silence or cut to exactly `length` samples (a view when cutting)."""
    if samples.size >= length:
        return samples[:length]
    out = np.zeros(length, np.float32)
    out[: samples.size] = samples
    return out
