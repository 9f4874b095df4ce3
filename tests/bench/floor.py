"""The floor a job's real-time factor is compared with: a plain PyAV encode (the project's
Mp4Writer, H.264 + AAC) of one still frame repeated, at the same size, frame count and audio."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image

from postprocess.encode import AUDIO_RATE_HZ, Mp4Writer
from tests.servers import MEDIA_DIR


def still_frame(source: str, size: tuple[int, int], media_dir: Path = MEDIA_DIR) -> np.ndarray:
    """The image (or a video's first frame) resized to `size` (width, height) as RGB."""
    path = media_dir / source
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        image = Image.open(path).convert("RGB")
    else:
        with av.open(str(path)) as container:
            image = next(container.decode(video=0)).to_image()
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR))


def resample_to_output(audio: np.ndarray, rate_hz: int) -> np.ndarray:
    """Linear resampling to the writer's rate (good enough for a timing floor)."""
    count = int(round(audio.size * AUDIO_RATE_HZ / rate_hz))
    positions = np.linspace(0, audio.size - 1, count)
    return np.interp(positions, np.arange(audio.size), audio).astype(np.float32)


def encode_floor_s(frame: np.ndarray, frames: int, fps: float, audio_48k: np.ndarray) -> float:
    """Seconds to encode `frames` copies of `frame` with the audio into an MP4."""
    height, width = frame.shape[:2]
    with tempfile.TemporaryDirectory(prefix="lipsyncd-bench-") as scratch:
        started = time.perf_counter()
        with Mp4Writer(Path(scratch) / "floor.mp4", (width, height), fps, audio_48k) as writer:
            for _ in range(frames):
                writer.write(frame)
        return time.perf_counter() - started
