"""Audio decoding and normalisation with PyAV: any container/codec to float32 PCM at a
chosen rate, mono, loudness-normalised; plus the length rules that place voices in time."""
from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np

from preprocess.containers import open_input
from preprocess.errors import MediaError
from proto.vocabulary import ErrorCode

FEATURE_RATE_HZ = 16_000   # what the audio_features stage takes
OUTPUT_RATE_HZ = 48_000    # what goes into the AAC track
TARGET_RMS_DBFS = -20.0
PEAK_LIMIT = 0.95


def iter_audio(path: Path, rate_hz: int, max_duration_s: float) -> Iterator[np.ndarray]:
    """Decode the first audio stream to mono float32 chunks at `rate_hz` (each a new array),
    refusing long audio as soon as it is too long, and empty audio at the end."""
    early_limit = int(max_duration_s * rate_hz) + rate_hz
    total = 0
    try:
        with open_input(path) as container:
            if not container.streams.audio:
                raise MediaError(ErrorCode.NO_AUDIO_STREAM, "The audio file has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_hz)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    total += chunk.size
                    yield chunk
                if total > early_limit:
                    raise MediaError(ErrorCode.AUDIO_TOO_LONG, f"Audio is longer than {max_duration_s:.0f} s")
            for out in resampler.resample(None):
                chunk = out.to_ndarray().reshape(-1)
                total += chunk.size
                yield chunk
    except av.error.FFmpegError as exc:
        raise MediaError(ErrorCode.UNSUPPORTED_MEDIA, f"The audio could not be decoded: {exc}") from exc
    if total == 0:
        raise MediaError(ErrorCode.EMPTY_AUDIO, "The audio is empty")
    if total > max_duration_s * rate_hz + rate_hz // 100:
        raise MediaError(ErrorCode.AUDIO_TOO_LONG, f"Audio is longer than {max_duration_s:.0f} s")


def decode_audio(path: Path, rate_hz: int, max_duration_s: float) -> np.ndarray:
    """The whole of `iter_audio` in one array.

    Samples go straight into one growing buffer (doubling), so the peak is about twice
    the decoded audio rather than a list of chunks plus their concatenation."""
    buffer = np.empty(rate_hz * 30, np.float32)
    total = 0
    for chunk in iter_audio(path, rate_hz, max_duration_s):
        if total + chunk.size > buffer.size:
            grown = np.empty(max(buffer.size * 2, total + chunk.size), np.float32)
            grown[:total] = buffer[:total]
            buffer = grown
        buffer[total : total + chunk.size] = chunk
        total += chunk.size
    return buffer[:total].copy() if buffer.size > total * 1.25 else buffer[:total]


def write_track(path: Path, dest: Path, rate_hz: int, max_duration_s: float, gain: float = 1.0) -> int:
    """Decode as `iter_audio` does into `dest` as raw float32 samples, times `gain` and
    clipped to [-1, 1], chunk by chunk (memory flat in the audio's length); how many."""
    total = 0
    with open(dest, "wb") as out:
        for chunk in iter_audio(path, rate_hz, max_duration_s):
            chunk *= np.float32(gain)
            np.clip(chunk, -1.0, 1.0, out=chunk)
            chunk.tofile(out)
            total += chunk.size
    return total


class RawTrack:
    """A mono float32 track in a raw sample file, read by slices in order as `Mp4Writer`
    takes its audio: `size` samples long (silence past the file's end), each times `scale`.
    It holds one block of about a second, so a long track costs no memory."""

    BLOCK = OUTPUT_RATE_HZ  # one second

    def __init__(self, path: Path, size: int | None = None, scale: float = 1.0) -> None:
        self.path = path
        self.stored = path.stat().st_size // 4
        self.size = self.stored if size is None else size
        self.scale = float(scale)
        self._block = np.zeros(0, np.float32)
        self._block_start = 0

    def fit(self, size: int) -> RawTrack:
        """The same samples padded with silence or cut to exactly `size`."""
        return RawTrack(self.path, size, self.scale)

    def __getitem__(self, index: slice) -> np.ndarray:
        start, stop, step = index.indices(self.size)
        if step != 1:
            raise ValueError("a RawTrack is read by contiguous slices")
        if stop <= start:
            return np.zeros(0, np.float32)
        if not (self._block_start <= start and stop <= self._block_start + self._block.size):
            self._load(start, max(stop - start, self.BLOCK))
        return self._block[start - self._block_start : stop - self._block_start]

    def _load(self, start: int, count: int) -> None:
        block = np.zeros(min(count, self.size - start), np.float32)
        stored = min(start + block.size, self.stored) - start
        if stored > 0:
            block[:stored] = np.fromfile(self.path, np.float32, count=stored, offset=start * 4)
        if self.scale != 1.0:
            block *= np.float32(self.scale)
        self._block, self._block_start = block, start


def concat_tracks(paths: Sequence[Path], dest: Path) -> RawTrack:
    """The raw tracks one after another, as one track in `dest`."""
    with open(dest, "wb") as out:
        for path in paths:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, out, 1 << 20)
    return RawTrack(dest)


def mix_tracks(paths: Sequence[Path], dest: Path) -> RawTrack:
    """The raw tracks played together (summed), as long as the longest, in `dest`; scaled
    down to PEAK_LIMIT where the sum would peak above it. Mixed a second at a time."""
    tracks = [RawTrack(path) for path in paths]
    length = max(track.size for track in tracks)
    tracks = [track.fit(length) for track in tracks]
    peak = 0.0
    with open(dest, "wb") as out:
        for start in range(0, length, RawTrack.BLOCK):
            stop = min(start + RawTrack.BLOCK, length)
            block = np.sum([track[start:stop] for track in tracks], axis=0, dtype=np.float32)
            peak = max(peak, float(np.max(np.abs(block))))
            block.tofile(out)
    return RawTrack(dest, scale=PEAK_LIMIT / peak if peak > PEAK_LIMIT else 1.0)


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
