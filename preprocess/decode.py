"""Frame decoding with PyAV: images (EXIF orientation, any colour mode, size limits) and
videos as a constant-rate stream of RGB frames at the output size, rotation applied (in a
child process, `python -m preprocess.decode`, so that a decoder crash fails the job, not the
orchestrator); and a scratch-file store for decoded frames that are read back out of order."""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image, ImageOps

from preprocess.containers import open_input
from preprocess.errors import MediaError
from proto.vocabulary import ErrorCode

PIPE_BYTES = 1024 * 1024


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Scale so the short side is `short_side`, keep the aspect ratio, even dimensions."""
    scale = short_side / min(width, height)
    out_w = max(2, int(round(width * scale / 2)) * 2)
    out_h = max(2, int(round(height * scale / 2)) * 2)
    return out_w, out_h


def load_image(path: Path, max_pixels: int) -> np.ndarray:
    """Decode an image to RGB uint8 with EXIF orientation applied; alpha is put on white."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise MediaError(
                    ErrorCode.IMAGE_TOO_LARGE,
                    f"The image is {image.width}x{image.height}; at most {max_pixels // 1_000_000} megapixels are accepted",
                )
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError as exc:
        raise MediaError(ErrorCode.IMAGE_TOO_LARGE, f"The image is too large: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise MediaError(ErrorCode.UNSUPPORTED_MEDIA, f"The image could not be decoded: {exc}") from exc


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def _rotate(rgb: np.ndarray, rotation_deg: int) -> np.ndarray:
    # PyAV reports the display matrix angle counter-clockwise; np.rot90 turns counter-clockwise.
    turns = (int(round(rotation_deg / 90)) % 4)
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


def iter_video_frames(
    path: Path, fps: float, size: tuple[int, int], rotation_deg: int = 0
) -> Iterator[np.ndarray]:
    """Yield RGB frames at a constant `fps` (VFR input resampled by timestamp) and `size`.

    Output frame i shows the latest source frame whose time is <= i / fps, so frame rate
    changes never shift the picture against the audio.
    """
    try:
        with open_input(path) as container:
            if not container.streams.video:
                raise MediaError(ErrorCode.UNSUPPORTED_MEDIA, "The video has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            next_index = 0
            last: np.ndarray | None = None
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else next_index / fps
                # Scale in libswscale before rotating: far cheaper than resizing in Python.
                quarter_turn = (int(round(rotation_deg / 90)) % 2) == 1
                width, height = (size[1], size[0]) if quarter_turn else size
                current = _rotate(_frame_rgb(frame, width, height), rotation_deg)
                while last is not None and next_index / fps < t - 0.5 / fps:
                    yield last
                    next_index += 1
                if next_index / fps <= t + 0.5 / fps:
                    yield current
                    next_index += 1
                last = current
    except av.error.FFmpegError as exc:
        raise MediaError(ErrorCode.UNSUPPORTED_MEDIA, f"The video could not be decoded: {exc}") from exc


def _frame_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """One decoded frame as RGB uint8 [height, width, 3] (width and height even). libswscale
    scales it as 4:2:0 YUV with its bicubic, which widens with a reduction (no aliasing) and
    runs in SIMD, and brings any format, matrix (BT.709 video) or range (full-range JPEG
    YUV) to BT.601 limited range on the way; OpenCV then converts that with the exact matrix,
    which `postprocess.encode.i420_planes` inverts, so an untouched pixel leaves a dub as it
    came in. libswscale's own RGB output is about a level dark. One scaling thread: its
    automatic threads cost more than they save beside the decoder's. talk_a's 136 frames
    cost the decoder child 0.26 core-s at 480 px and 0.43 at 720 px this way, against 0.57
    when libswscale converts to RGB itself. Scaling
    before conversion keeps a reduction's prefilter: OpenCV's bicubic on RGB has none, and
    with it talk_a's own-speech dub at 480p followed the real mouth less in `make eval`
    (correlation 0.47 against 0.61)."""
    planes = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC",
                            src_color_range=frame.color_range or None,
                            dst_colorspace=Colorspace.ITU601, dst_color_range=ColorRange.MPEG, threads=1)
    try:
        return np.asarray(cv2.cvtColor(planes.to_ndarray(), cv2.COLOR_YUV2RGB_I420), np.uint8)
    except cv2.error as exc:
        if exc.code == cv2.Error.StsNoMem:  # under the child's memory cap, as numpy's MemoryError
            raise MemoryError(str(exc)) from exc
        raise


class VideoDecoder:
    """A child process that decodes one video (`iter_video_frames`) and streams its raw RGB
    frames through a pipe: the orchestrator holds one frame at a time, and a crash in the
    decoder (hostile bytes) ends this job's video with a MediaError instead of ending the
    orchestrator. Start it ahead of need: its Python and PyAV start-up (about a second on a
    busy machine) then overlaps the job's download and analysis."""

    def __init__(self, max_memory_bytes: int = 0) -> None:
        """`max_memory_bytes` (> 0): the child's address space is capped there (RLIMIT_AS,
        set by the child itself before it reads the request), so a hostile video fails with
        `video_too_large` instead of taking the machine's memory."""
        self._errors = tempfile.TemporaryFile()
        # One malloc arena: per-thread arenas would reserve address space the cap counts.
        env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
        self._child = subprocess.Popen(
            [sys.executable, "-m", "preprocess.decode", str(max(0, max_memory_bytes))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors,
            cwd=str(Path(__file__).resolve().parent.parent), env=env,
        )
        assert self._child.stdout is not None
        _widen_pipe(self._child.stdout.fileno())

    def __enter__(self) -> VideoDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frames(self, path: Path, fps: float, size: tuple[int, int], rotation_deg: int = 0) -> Iterator[np.ndarray]:
        child = self._child
        assert child.stdin is not None and child.stdout is not None
        stdout = child.stdout
        assert isinstance(stdout, io.BufferedReader)  # Popen's default buffering: it has readinto
        request = {"path": str(path), "fps": fps, "size": list(size), "rotation_deg": rotation_deg}
        try:
            child.stdin.write(json.dumps(request).encode() + b"\n")
            child.stdin.close()
        except BrokenPipeError:
            pass  # it died before the request: reported from its exit status below
        frame_bytes = size[0] * size[1] * 3
        try:
            while True:
                frame = np.empty((size[1], size[0], 3), np.uint8)
                view, filled = memoryview(frame.data).cast("B"), 0
                while filled < frame_bytes:
                    count = stdout.readinto(view[filled:])
                    if not count:
                        break
                    filled += count
                if filled < frame_bytes:
                    break
                yield frame
            code = child.wait()
        finally:
            self.close()
        if code != 0:
            self._errors.seek(0)
            stderr = self._errors.read()[-4000:].decode(errors="replace")
            raise _child_error(code, stderr)

    def waiting(self) -> bool:
        """True while the child runs and has not been given a video yet."""
        return self._child.poll() is None and self._child.stdin is not None and not self._child.stdin.closed

    def close(self) -> None:
        """Stop the child if it still runs (the consumer stopped early, or never asked)."""
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        for stream in (self._child.stdin, self._child.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()


class SpareDecoder:
    """One `VideoDecoder` child started ahead of the next dub, while the orchestrator waits for
    work: a dub then takes a child whose Python, PyAV and OpenCV start-up (about 0.3 s of CPU) is
    already done, instead of paying it while its own tracking and speech analysis keep the
    cores busy. Each child still serves one video and exits, under the memory cap it was
    started with; a spare left over when its parent dies reads end-of-file and exits."""

    def __init__(self) -> None:
        self._spare: VideoDecoder | None = None
        self._spare_cap = 0

    def take(self, max_memory_bytes: int = 0) -> VideoDecoder:
        """The spare when it is alive and capped as asked, else a child started now."""
        decoder, self._spare = self._spare, None
        if decoder is not None and decoder.waiting() and self._spare_cap == max_memory_bytes:
            return decoder
        if decoder is not None:
            decoder.close()
        return VideoDecoder(max_memory_bytes)

    def refill(self, max_memory_bytes: int = 0) -> None:
        """Start the spare for the next dub (call when a dub is done, or at start-up)."""
        if self._spare is None:
            self._spare, self._spare_cap = VideoDecoder(max_memory_bytes), max_memory_bytes

    def close(self) -> None:
        decoder, self._spare = self._spare, None
        if decoder is not None:
            decoder.close()


def iter_video_frames_in_child(
    path: Path, fps: float, size: tuple[int, int], rotation_deg: int = 0
) -> Iterator[np.ndarray]:
    """`iter_video_frames` in a child process started now (see VideoDecoder)."""
    return VideoDecoder().frames(path, fps, size, rotation_deg)


def _widen_pipe(fd: int) -> None:
    """A 1 MiB pipe (Linux) instead of 64 KiB: a frame crosses in a few wake-ups, not dozens."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
            fcntl.fcntl(fd, set_size, PIPE_BYTES)


def _child_error(code: int, stderr: str) -> MediaError:
    for line in reversed(stderr.splitlines()):
        if line.startswith("{"):
            try:
                reported = json.loads(line)
                return MediaError(str(reported["code"]), str(reported["message"]))
            except (ValueError, KeyError):
                break
    reason = f"signal {-code}" if code < 0 else f"exit status {code}"
    return MediaError(ErrorCode.UNSUPPORTED_MEDIA, f"The video could not be decoded (the decoder crashed, {reason})")


def _limit_memory(max_bytes: int) -> None:
    if max_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def _over_the_limit(max_bytes: int) -> MediaError:
    return MediaError(
        ErrorCode.VIDEO_TOO_LARGE,
        f"The video needs more memory to decode than the decoder may use ({max_bytes // 2**20} MiB)",
    )


def _decode_to_stdout(max_memory_bytes: int = 0) -> int:
    """Child side: cap its own memory, then one JSON request line on stdin, then the frames
    to the parent on a private copy of stdout (C libraries that print to stdout would corrupt
    the stream, so fd 1 goes to stderr); a MediaError is reported as one JSON line on stderr."""
    _limit_memory(max_memory_bytes)
    cv2.setNumThreads(1)  # frames are converted one at a time, beside the decoder's own threads
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    line = sys.stdin.readline()
    if not line:
        return 0  # the parent never needed us
    request = json.loads(line)
    width, height = request["size"]
    try:
        for frame in iter_video_frames(Path(request["path"]), float(request["fps"]), (int(width), int(height)),
                                       int(request["rotation_deg"])):
            frames_out.write(np.ascontiguousarray(frame).data)
        frames_out.flush()
    except MemoryError:
        error = _over_the_limit(max_memory_bytes)
        print(json.dumps({"code": error.code, "message": error.message}), file=sys.stderr)
        return 3
    except MediaError as exc:
        if max_memory_bytes > 0 and "Cannot allocate memory" in exc.message:
            exc = _over_the_limit(max_memory_bytes)  # FFmpeg's ENOMEM under the cap
        print(json.dumps({"code": exc.code, "message": exc.message}), file=sys.stderr)
        return 3
    except BrokenPipeError:
        return 0  # the parent stopped reading: it has the frames it wanted
    return 0


class FrameStore:
    """RGB frames of one size in a raw scratch file, appended in order and read back by
    index. Reads and writes are plain file I/O, not a memory map: the frames stay in the
    kernel's page cache (reclaimable) instead of this process's memory, so a long video costs
    scratch disk (width x height x 3 bytes a frame), not memory."""

    def __init__(self, path: Path, size: tuple[int, int]) -> None:
        self.path = path
        self.frame_shape = (size[1], size[0], 3)
        self.frame_bytes = size[0] * size[1] * 3
        self.count = 0
        path.write_bytes(b"")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.count, *self.frame_shape)

    def __len__(self) -> int:
        return self.count

    def extend(self, frames: np.ndarray) -> None:
        """Append frames [N, H, W, 3]."""
        if frames.shape[1:] != self.frame_shape or frames.dtype != np.uint8:
            raise ValueError(f"frames of shape {frames.shape[1:]} {frames.dtype} do not fit a store of {self.frame_shape}")
        with open(self.path, "ab") as out:
            out.write(np.ascontiguousarray(frames).data)
        self.count += frames.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame `index` as a new array."""
        index = int(index)
        if not 0 <= index < self.count:
            raise IndexError(f"frame {index} of {self.count}")
        frame = np.empty(self.frame_shape, np.uint8)
        with open(self.path, "rb", buffering=0) as source:
            source.seek(index * self.frame_bytes)
            if source.readinto(frame.data) != self.frame_bytes:
                raise OSError(f"{self.path} ends before frame {index}")
        return frame


if __name__ == "__main__":
    raise SystemExit(_decode_to_stdout(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
