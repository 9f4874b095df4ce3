"""Media uploads: a file streamed into storage under `uploads/<uuid>/<name>` (on S3 as a
multipart upload, at most one part in memory) and answered with a signed URL that can be
used in formState like any public URL."""
from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.formparsers import MultiPartException

from gateway.api.deps import Caller, Ctx
from gateway.api.errors import ApiError, invalid_request
from gateway.context import GatewayContext
from gateway.jobs import iso_utc
from gateway.upkeep import require_free_disk
from postprocess.storage import InvalidKey
from proto.vocabulary import ErrorCode

router = APIRouter(prefix="/api/v1", tags=["uploads"])

CHUNK_BYTES = 1024 * 1024
MAX_NAME_LENGTH = 100


async def _store(ctx: GatewayContext, file: StarletteUploadFile, cap: int) -> tuple[str, int]:
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
    return key, size


def safe_name(filename: str | None) -> str:
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "upload"
    return name[-MAX_NAME_LENGTH:]


_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        }
    },
}


@router.post("/uploads", status_code=201, openapi_extra={"requestBody": _UPLOAD_BODY})
async def upload_media(request: Request, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    """Store a media file; use the returned `url` in formState (valid 7 days).

    The form is parsed here rather than declared as a parameter: FastAPI reads declared
    bodies before dependencies run, and the API key must be checked before a single byte
    of the upload is accepted (the body limit itself is `BodyLimit`'s, as it streams)."""
    require_free_disk(ctx)
    try:
        form = await request.form(max_files=1, max_fields=10)
    except MultiPartException as exc:
        raise invalid_request("file", exc.message) from None
    try:
        file = form.get("file")
        if not isinstance(file, StarletteUploadFile):
            raise invalid_request("file", "Field required")
        return await store_upload(ctx, file)
    finally:
        await form.close()


async def store_upload(ctx: GatewayContext, file: StarletteUploadFile) -> dict[str, Any]:
    """Store one parsed upload (the API route's and the dashboard playground's one path):
    free disk checked, size capped, answered with its signed URL."""
    require_free_disk(ctx)
    key, size = await _store(ctx, file, ctx.settings.max_upload_bytes)
    signed = ctx.signer.sign(key, ctx.settings.output_url_ttl_s)
    return {
        "url": signed.url,
        "key": key,
        "size_bytes": size,
        "expires_at": iso_utc(signed.expires_at.replace(tzinfo=None)),
    }
