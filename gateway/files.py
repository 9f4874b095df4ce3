"""Stored media served over signed URLs (the scheme of proto/urlsign.py). Results and uploads live under
LIPSYNCD_STORAGE_DIR; Range requests get 206 answers so players can seek."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from gateway.api.errors import ApiError
from proto.urlsign import EXPIRY_ROUNDING_S, SignedUrl, UrlSigner
from proto.vocabulary import ErrorCode

__all__ = ["EXPIRY_ROUNDING_S", "FileSigner", "SignedUrl", "router"]


@dataclass(frozen=True)
class FileSigner(UrlSigner):
    """The URL signer plus the storage directory the links resolve to."""

    storage_dir: Path = Path(".")

    def path_for(self, key: str) -> Path | None:
        """The file for a storage key, or None if the key escapes the storage directory."""
        root = self.storage_dir.resolve()
        candidate = (root / key).resolve()
        if not candidate.is_relative_to(root) or candidate == root:
            return None
        return candidate


router = APIRouter()

_MEDIA_TYPES = {
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".m4a": "audio/mp4",
    ".ogg": "audio/ogg",
    ".flac": "audio/flac",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}


@router.get("/files/{key:path}", include_in_schema=False)
async def get_file(
    request: Request, key: str, expires: int = Query(...), signature: str = Query(...)
) -> FileResponse:
    signer: FileSigner = request.app.state.gateway.signer
    if not signer.verify(key, expires, signature):
        raise ApiError(403, ErrorCode.INVALID_SIGNATURE, "This link is invalid or has expired")
    path = signer.path_for(key)
    if path is None or not path.is_file():
        raise ApiError(404, ErrorCode.NOT_FOUND, "File not found")
    media_type = _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private"})
