"""Media uploads: a file stored under `uploads/<uuid>/<name>` and answered with a signed
URL that can be used in formState like any public URL."""
from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import Caller, Ctx
from gateway.api.errors import ApiError, invalid_request
from gateway.jobs import iso_utc
from gateway.upkeep import require_free_disk

router = APIRouter(prefix="/api/v1", tags=["uploads"])

CHUNK_BYTES = 1024 * 1024
MAX_NAME_LENGTH = 100
# Multipart framing around the file: a request a little over the cap is still fine.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def safe_name(filename: str | None) -> str:
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "upload"
    return name[-MAX_NAME_LENGTH:]


@router.post("/uploads", status_code=201)
async def upload_media(request: Request, file: UploadFile, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    """Store a media file; use the returned `url` in formState (valid 7 days)."""
    cap = ctx.settings.max_upload_bytes
    declared = int(request.headers.get("content-length") or 0)
    if declared > cap + MULTIPART_OVERHEAD_BYTES:
        raise ApiError(413, "payload_too_large", f"Uploads are limited to {cap} bytes")
    require_free_disk(ctx)
    key = f"uploads/{uuid.uuid4()}/{safe_name(file.filename)}"
    path = ctx.signer.path_for(key)
    if path is None:
        raise invalid_request("file", "invalid file name")
    await run_in_threadpool(path.parent.mkdir, parents=True, exist_ok=True)
    size = 0
    try:
        with path.open("wb") as out:
            while chunk := await file.read(CHUNK_BYTES):
                size += len(chunk)
                if size > cap:
                    raise ApiError(413, "payload_too_large", f"Uploads are limited to {cap} bytes")
                await run_in_threadpool(out.write, chunk)
    except ApiError:
        path.unlink(missing_ok=True)
        path.parent.rmdir()
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        path.parent.rmdir()
        raise invalid_request("file", "the file is empty")
    signed = ctx.signer.sign(key, ctx.settings.output_url_ttl_s)
    return {
        "url": signed.url,
        "key": key,
        "size_bytes": size,
        "expires_at": iso_utc(signed.expires_at.replace(tzinfo=None)),
    }
