"""Reading what is measured with PyAV and Pillow: video frames as RGB arrays, audio as mono
float32 at a chosen rate, and a still portrait played as a video (the no-motion baseline)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

AUDIO_RATE_HZ = 16_000


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frame_count: int
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


def probe_video(path: Path) -> VideoInfo:
    """Frame rate, size and an exact frame count (by decoding: container counts can lie)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        count = sum(1 for _ in container.decode(video=0))
        return VideoInfo(fps, count, stream.codec_context.width, stream.codec_context.height)


def read_frames(path: Path) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def read_audio(path: Path, rate_hz: int = AUDIO_RATE_HZ) -> np.ndarray:
    """First audio stream as mono float32 in [-1, 1] at rate_hz."""
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_hz)
        for frame in container.decode(audio=0):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def read_image(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def still_frames(image: np.ndarray, frame_count: int) -> Iterator[np.ndarray]:
    """The same picture frame_count times: a talking-head method that does nothing."""
    for _ in range(frame_count):
        yield image


def resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
