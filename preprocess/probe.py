"""Media probing with PyAV, run in a child process (`python -m preprocess.probe FILE KIND`)
so that a decoder crash on hostile input fails that job, never the orchestrator."""
from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

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

    with av.open(str(path), metadata_errors="ignore") as container:
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


async def probe(path: Path, kind: str) -> MediaInfo:
    """Probe in a child process; any failure there is reported as unreadable media."""
    from preprocess.errors import MediaError  # noqa: PLC0415

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "preprocess.probe", str(path), kind,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT_S)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise MediaError("unsupported_media", f"The {kind} file could not be read in time") from None
    if proc.returncode != 0:
        reason = err.decode(errors="replace").strip().splitlines()[-1:] or ["decoder crashed"]
        raise MediaError("unsupported_media", f"The {kind} file could not be decoded ({reason[0][:200]})")
    return MediaInfo(**json.loads(out))


def main() -> None:
    path, kind = Path(sys.argv[1]), sys.argv[2]
    try:
        info = probe_in_process(path, kind)
    except Exception as exc:  # reported to the parent through stderr and the exit code
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    print(json.dumps(asdict(info)))


if __name__ == "__main__":
    main()
