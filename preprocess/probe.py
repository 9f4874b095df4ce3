"""Media probing with PyAV, run in a child process so that a decoder crash on hostile input
fails that job, never the orchestrator.

The child stays up between probes (`python -m preprocess.probe --serve`: one request line
`KIND<TAB>PATH` in, one JSON line out), which saves a Python start and the PyAV import on
every file; one that dies or hangs on a file is replaced for the next probe.
`python -m preprocess.probe FILE KIND` probes one file and exits.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

PROBE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class MediaInfo:
    kind: str                  # video | audio | image
    duration_s: float = 0.0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    rotation_deg: int = 0
    has_video: bool = False
    has_audio: bool = False
    audio_rate_hz: int = 0
    frame_count: int = 0


def _probe_image(path: Path) -> MediaInfo:
    from PIL import Image  # noqa: PLC0415 - child process only

    Image.MAX_IMAGE_PIXELS = None  # the limit is checked by the caller on the header size
    with Image.open(path) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
        if orientation in (5, 6, 7, 8):
            width, height = height, width
    return MediaInfo(kind="image", width=width, height=height)


def _probe_av(path: Path, kind: str) -> MediaInfo:
    import av  # noqa: PLC0415

    from preprocess.containers import open_input  # noqa: PLC0415

    with open_input(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        duration_s = float(container.duration / 1_000_000) if container.duration else 0.0
        info: dict[str, object] = {"kind": kind, "has_video": video is not None,
                                   "has_audio": audio is not None}
        if video is not None:
            rate = video.average_rate or video.guessed_rate or Fraction(25)
            info.update(width=video.codec_context.width, height=video.codec_context.height,
                        fps=float(rate), frame_count=int(video.frames or 0))
            if video.duration and video.time_base:
                duration_s = max(duration_s, float(video.duration * video.time_base))
            rotation = 0
            try:
                # Decode one frame: it proves the stream is decodable and carries the
                # display-matrix rotation of phone videos.
                frame = next(container.decode(video=0))
                rotation = int(getattr(frame, "rotation", 0) or 0)
            except (StopIteration, av.error.FFmpegError) as exc:
                raise ValueError(f"video stream cannot be decoded: {exc}") from exc
            info["rotation_deg"] = rotation
        if audio is not None:
            info["audio_rate_hz"] = int(audio.rate or 0)
            if audio.duration and audio.time_base:
                duration_s = max(duration_s, float(audio.duration * audio.time_base))
        info["duration_s"] = duration_s
    return MediaInfo(**info)  # type: ignore[arg-type]


def probe_in_process(path: Path, kind: str) -> MediaInfo:
    if kind == "image":
        return _probe_image(path)
    return _probe_av(path, kind)


class _ProbeWorker:
    """The long-lived probing child of one event loop; probes go through it one at a time."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def probe(self, path: Path, kind: str) -> MediaInfo:
        from preprocess.errors import MediaError  # noqa: PLC0415
        from proto.vocabulary import ErrorCode  # noqa: PLC0415

        async with self._lock:
            proc = await self._running()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(f"{kind}\t{path}\n".encode())
                await proc.stdin.drain()
                line = await asyncio.wait_for(proc.stdout.readline(), PROBE_TIMEOUT_S)
            except asyncio.TimeoutError:
                await self._discard()
                raise MediaError(ErrorCode.UNSUPPORTED_MEDIA, f"The {kind} file could not be read in time") from None
            except (BrokenPipeError, ConnectionResetError):
                line = b""
            if not line:  # the child died on this file (a decoder crash)
                code = await self._discard()
                raise MediaError(ErrorCode.UNSUPPORTED_MEDIA, f"The {kind} file could not be decoded "
                                 f"(the decoder crashed, exit status {code})")
        answer = json.loads(line)
        if "error" in answer:
            raise MediaError(ErrorCode.UNSUPPORTED_MEDIA, f"The {kind} file could not be decoded ({answer['error'][:200]})")
        return MediaInfo(**answer["info"])

    async def start(self) -> None:
        async with self._lock:
            await self._running()

    async def _running(self) -> asyncio.subprocess.Process:
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "preprocess.probe", "--serve",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                cwd=str(Path(__file__).resolve().parent.parent),
            )
        return self._proc

    async def _discard(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            proc.kill()
        return await proc.wait()

    async def close(self) -> None:
        async with self._lock:
            await self._discard()


_workers: dict[asyncio.AbstractEventLoop, _ProbeWorker] = {}


def _worker() -> _ProbeWorker:
    for other in [loop for loop in _workers if loop.is_closed()]:
        del _workers[other]  # a finished loop's child went with it
    return _workers.setdefault(asyncio.get_running_loop(), _ProbeWorker())


async def probe(path: Path, kind: str) -> MediaInfo:
    """Probe in the child process; any failure there is reported as unreadable media."""
    return await _worker().probe(path, kind)


async def start_probe_worker() -> None:
    """Start the probing child ahead of the first job (it starts on demand otherwise)."""
    await _worker().start()


async def close_probe_worker() -> None:
    """Stop this event loop's probing child (it is started again by the next probe)."""
    worker = _workers.pop(asyncio.get_running_loop(), None)
    if worker is not None:
        await worker.close()


def serve() -> None:
    """Answer probe requests from stdin until it closes. C libraries that print to stdout
    would corrupt the answers, so fd 1 is pointed at stderr and answers use a private copy."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for request in sys.stdin:
        kind, _, path = request.rstrip("\n").partition("\t")
        answer: dict[str, Any]
        try:
            answer = {"info": asdict(probe_in_process(Path(path), kind))}
        except Exception as exc:  # noqa: BLE001 - every failure is the file's, reported to the parent
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer) + "\n")


def main() -> None:
    if sys.argv[1:] == ["--serve"]:
        serve()
        return
    path, kind = Path(sys.argv[1]), sys.argv[2]
    try:
        info = probe_in_process(path, kind)
    except Exception as exc:  # reported to the parent through stderr and the exit code
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    print(json.dumps(asdict(info)))


if __name__ == "__main__":
    main()
