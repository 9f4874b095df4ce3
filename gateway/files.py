"""Stored media served over signed URLs: `/files/{key}?expires=..&signature=..` where the
signature comes from proto/urlsign.py. Results and uploads live in
the configured storage: files under LIPSYNCD_STORAGE_DIR are sent from here (Range requests
get 206 answers so players can seek); objects in S3 are answered with a 302 redirect to a
presigned S3 GET that lasts as long as the signed link still does, so the URL in the job
object keeps one shape whatever the backend."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gateway.api.errors import ApiError
from postprocess.storage import InvalidKey, Storage
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


def _presigned_if_stored(storage: Storage, key: str, ttl_s: int) -> str | None:
    return storage.presigned_get_url(key, ttl_s) if storage.exists(key) else None


@router.get("/files/{key:path}", include_in_schema=False)
async def get_file(
    request: Request, key: str, expires: int = Query(...), signature: str = Query(...)
) -> Response:
    signer: FileSigner = request.app.state.gateway.signer
    storage: Storage = request.app.state.gateway.storage
    if not signer.verify(key, expires, signature):
        raise ApiError(403, ErrorCode.INVALID_SIGNATURE, "This link is invalid or has expired")
    not_found = ApiError(404, ErrorCode.NOT_FOUND, "File not found")
    try:
        path = storage.local_path(key)
        if path is None:  # an object store: send the client there
            ttl_s = max(1, int(expires - time.time()))
            url = await run_in_threadpool(_presigned_if_stored, storage, key, ttl_s)
            if url is None:
                raise not_found
            return RedirectResponse(url, status_code=302, headers={"Cache-Control": "private"})
    except InvalidKey:
        raise not_found from None
    if path is None or not path.is_file():
        raise not_found
    media_type = _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private"})
