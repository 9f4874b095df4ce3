"""Media uploads: a file streamed into storage under `uploads/<uuid>/<name>` (on S3 as a
multipart upload, at most one part in memory) and answered with a signed URL that can be
used in formState like any public URL."""
from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import Caller, Ctx
from gateway.api.errors import ApiError, invalid_request
from gateway.jobs import iso_utc
from postprocess.storage import InvalidKey
from proto.vocabulary import ErrorCode
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
        raise ApiError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"Uploads are limited to {cap} bytes")
    require_free_disk(ctx)
    key = f"uploads/{uuid.uuid4()}/{safe_name(file.filename)}"
    try:
        writer = await run_in_threadpool(ctx.storage.open_write, key)
    except InvalidKey:
        raise invalid_request("file", "invalid file name") from None
    size = 0
    with writer:  # an error on the way stores nothing
        while chunk := await file.read(CHUNK_BYTES):
            size += len(chunk)
            if size > cap:
                raise ApiError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"Uploads are limited to {cap} bytes")
            await run_in_threadpool(writer.write, chunk)
        if size == 0:
            raise invalid_request("file", "the file is empty")
    signed = ctx.signer.sign(key, ctx.settings.output_url_ttl_s)
    return {
        "url": signed.url,
        "key": key,
        "size_bytes": size,
        "expires_at": iso_utc(signed.expires_at.replace(tzinfo=None)),
    }
