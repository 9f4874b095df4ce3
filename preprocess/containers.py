"""Opening input media with PyAV safely: the demuxer is the one the file's magic bytes name
(never FFmpeg's own guess, which would also try playlists such as HLS or concat that open
other files and URLs), and only the `file` protocol may be used."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import av.container

from preprocess.errors import MediaError
from preprocess.sniff import SNIFF_BYTES, sniff_format
from proto.vocabulary import ErrorCode

# Sniffed format (as the fetcher names it) -> FFmpeg demuxer.
DEMUXERS = {
    "mp4": "mov", "mov": "mov", "3gp": "mov", "m4a": "mov",
    "webm": "matroska", "mkv": "matroska", "avi": "avi", "mpegts": "mpegts",
    "wav": "wav", "mp3": "mp3", "ogg": "ogg", "flac": "flac", "aac": "aac",
    "png": "png_pipe", "jpeg": "jpeg_pipe", "gif": "gif", "bmp": "bmp_pipe", "webp": "webp_pipe",
}
INPUT_OPTIONS = {"protocol_whitelist": "file"}


def demuxer_for(path: Path) -> str:
    with path.open("rb") as handle:
        sniffed = sniff_format(handle.read(SNIFF_BYTES))
    demuxer = DEMUXERS.get(sniffed or "")
    if demuxer is None:
        raise MediaError(ErrorCode.UNSUPPORTED_MEDIA, "The file is not in a supported media format")
    return demuxer


def open_input(path: Path) -> Any:
    """`av.open` for reading `path` with the sniffed demuxer and only the file protocol."""
    container: av.container.InputContainer = av.open(
        str(path), format=demuxer_for(path), options=dict(INPUT_OPTIONS),
        metadata_errors="ignore",
    )
    return container
