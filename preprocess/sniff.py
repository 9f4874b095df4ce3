"""What kind of media a file's first bytes say it is (magic numbers), and which formats each
input role accepts. Used by the input fetcher before any decoder sees the file."""
from __future__ import annotations

from collections.abc import Mapping
from enum import Enum


class MediaKind(str, Enum):
    VIDEO = "video"
    AUDIO = "audio"
    IMAGE = "image"
    MASK = "mask"

    @property
    def noun(self) -> str:
        return "mask image" if self is MediaKind.MASK else self.value


_VIDEO_FORMATS = frozenset({"mp4", "mov", "3gp", "webm", "mkv", "avi", "mpegts"})
_IMAGE_FORMATS = frozenset({"png", "jpeg", "webp", "gif", "bmp"})
# Audio may arrive in any container that can carry a soundtrack (people pass a video as
# the voice); the decoder later checks that there really is an audio stream.
ACCEPTED_FORMATS: Mapping[MediaKind, frozenset[str]] = {
    MediaKind.VIDEO: _VIDEO_FORMATS,
    MediaKind.AUDIO: frozenset({"wav", "mp3", "ogg", "flac", "m4a", "aac"}) | _VIDEO_FORMATS,
    MediaKind.IMAGE: _IMAGE_FORMATS,
    MediaKind.MASK: _IMAGE_FORMATS,
}
_FORMAT_DESCRIPTIONS = {
    "mp4": "an MP4 file", "mov": "a QuickTime file", "3gp": "a 3GP file", "webm": "a WebM file",
    "mkv": "a Matroska file", "avi": "an AVI file", "mpegts": "an MPEG-TS file",
    "wav": "WAV audio", "mp3": "MP3 audio", "ogg": "an Ogg file", "flac": "FLAC audio",
    "m4a": "M4A audio", "aac": "AAC audio", "png": "a PNG image", "jpeg": "a JPEG image",
    "webp": "a WebP image", "gif": "a GIF image", "bmp": "a BMP image",
}
SNIFF_BYTES = 512


def sniff_format(head: bytes) -> str | None:
    """The container/format named by the magic numbers in a file's first bytes, or None."""
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return "m4a"
        if brand == b"qt  ":
            return "mov"
        return "3gp" if brand.startswith(b"3g") else "mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):  # QuickTime without ftyp
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:64] else "mkv"
    if head[:4] in (b"RIFF", b"RF64"):
        return {b"AVI ": "avi", b"WAVE": "wav", b"WEBP": "webp"}.get(head[8:12])
    simple_magics = (
        (b"OggS", "ogg"), (b"fLaC", "flac"), (b"ID3", "mp3"), (b"\x89PNG\r\n\x1a\n", "png"),
        (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    )
    for magic, fmt in simple_magics:
        if head.startswith(magic):
            return fmt
    if head[:2] == b"BM" and head[6:10] == b"\0\0\0\0":
        return "bmp"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    if len(head) >= 3 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:  # ADTS sync with layer bits 00: AAC (FFF1 / FFF9)
            return "aac"
        # MPEG audio frame sync, a layer other than 00, a bitrate index other than 1111
        if head[1] & 0xE0 == 0xE0 and head[1] & 0x06 and head[2] >> 4 != 0xF:
            return "mp3"
    return None


def describe_format(fmt: str) -> str:
    return _FORMAT_DESCRIPTIONS.get(fmt, fmt)
