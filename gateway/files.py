"""Stored media served over signed URLs: `/files/{key}?expires=..&signature=..` where the
signature is hex HMAC-SHA256(secret_key, f"{key}:{expires}"). Results and uploads live under
LIPSYNCD_STORAGE_DIR; Range requests get 206 answers so players can seek."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from gateway.api.errors import ApiError

# Links are re-signed at each read; rounding the expiry to the hour keeps the URL stable
# between polls, so clients and caches see one URL per hour, not one per request.
EXPIRY_ROUNDING_S = 3600


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class FileSigner:
    secret_key: bytes
    public_url: str
    storage_dir: Path

    def signature(self, key: str, expires: int) -> str:
        return hmac.new(self.secret_key, f"{key}:{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, key: str, ttl_s: int, now_s: float | None = None) -> SignedUrl:
        now_s = time.time() if now_s is None else now_s
        expires = int((now_s + ttl_s) // EXPIRY_ROUNDING_S + 1) * EXPIRY_ROUNDING_S
        url = (
            f"{self.public_url}/files/{quote(key)}"
            f"?expires={expires}&signature={self.signature(key, expires)}"
        )
        return SignedUrl(url=url, expires_at=dt.datetime.fromtimestamp(expires, dt.UTC))

    def verify(self, key: str, expires: int, signature: str, now_s: float | None = None) -> bool:
        now_s = time.time() if now_s is None else now_s
        if expires < now_s:
            return False
        # As bytes: compare_digest refuses str with non-ASCII characters (TypeError, a 500).
        return hmac.compare_digest(self.signature(key, expires).encode(), signature.encode())

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
        raise ApiError(403, "invalid_signature", "This link is invalid or has expired")
    path = signer.path_for(key)
    if path is None or not path.is_file():
        raise ApiError(404, "not_found", "File not found")
    media_type = _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private"})
