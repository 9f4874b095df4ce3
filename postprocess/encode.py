"""MP4 writing with PyAV: H.264 video + AAC audio, interleaved as frames arrive, with the
moov atom in front (faststart) so players can start before the download ends."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Protocol

import av
import cv2
import numpy as np

AUDIO_RATE_HZ = 48_000
AAC_FRAME = 1024


class AudioTrack(Protocol):
    """Mono float32 samples at AUDIO_RATE_HZ, read in order by contiguous slices: an array,
    or a track streamed from a file (`preprocess.audio.RawTrack`)."""

    @property
    def size(self) -> int: ...

    def __getitem__(self, index: slice) -> np.ndarray: ...


def i420_planes(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] (even sides) as BT.601 limited-range 4:2:0 planes [H * 3 / 2, W]:
    OpenCV's conversion, within a level of libswscale's default and several times faster,
    and the exact inverse of the decoder's (`preprocess.decode`)."""
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420), np.uint8)


class Mp4Writer:
    """Streams RGB frames and a mono float32 track into an H.264/AAC MP4.

    Audio is fed in step with the video (up to each frame's end time), so memory does not
    grow with the length of the video and the file is interleaved for streaming.
    """

    def __init__(self, path: Path, size: tuple[int, int], fps: float, audio: np.ndarray | AudioTrack,
                 crf: int = 20, preset: str = "veryfast") -> None:
        self.path = path
        self.fps = fps
        # no copy when already float32
        self._audio = np.asarray(audio, dtype=np.float32) if isinstance(audio, np.ndarray) else audio
        self._audio_pos = 0
        self._frames = 0
        self._closed = False
        self._container = av.open(str(path), mode="w", options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001)
        self._video = self._container.add_stream("libx264", rate=rate)
        self._video.width, self._video.height = size
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"crf": str(crf), "preset": preset, "profile": "high"}
        self._video.codec_context.time_base = 1 / rate
        self._audio_stream = self._container.add_stream("aac", rate=AUDIO_RATE_HZ)
        self._audio_stream.layout = "mono"
        self._audio_stream.bit_rate = 128_000
        # The constant-quantiser coder: half the CPU of the default two-loop search (6 s of
        # speech: 0.05 against 0.12 s here), with the same size and the same SNR (17 dB) on
        # speech_en_1 at this rate.
        self._audio_stream.options = {"aac_coder": "fast"}

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(i420_planes(rgb), format="yuv420p")  # x264 takes them as they are
        frame.pts = self._frames
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        self._frames += 1
        self._push_audio(int(round(self._frames / self.fps * AUDIO_RATE_HZ)))

    def _push_audio(self, until: int) -> None:
        until = min(until, self._audio.size)
        while self._audio_pos + AAC_FRAME <= until or (until == self._audio.size and self._audio_pos < until):
            chunk = self._audio[self._audio_pos : self._audio_pos + AAC_FRAME]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            frame.sample_rate = AUDIO_RATE_HZ
            frame.pts = self._audio_pos
            for packet in self._audio_stream.encode(frame):
                self._container.mux(packet)
            self._audio_pos += chunk.size

    def close(self) -> None:
        """Flush both encoders and finish the file (faststart rewrites it: callers on an event
        loop run this in a thread); once only."""
        if self._closed:
            return
        self._closed = True
        self._push_audio(self._audio.size)
        for packet in self._video.encode(None):
            self._container.mux(packet)
        for packet in self._audio_stream.encode(None):
            self._container.mux(packet)
        self._container.close()

    @property
    def frame_count(self) -> int:
        return self._frames

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self._closed = True
            self._container.close()
