"""Media uploads: a file stored under `uploads/<uuid>/<name>` and answered with a signed
URL that can be used in formState like any public URL."""
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

router = APIRouter(prefix="/api/v1", tags=["uploads"])

CHUNK_BYTES = 1024 * 1024
MAX_NAME_LENGTH = 100


async def _store(ctx: GatewayContext, file: StarletteUploadFile, cap: int) -> tuple[str, int]:
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
    cap = ctx.settings.max_upload_bytes
    try:
        form = await request.form(max_files=1, max_fields=10)
    except MultiPartException as exc:
        raise invalid_request("file", exc.message) from None
    try:
        file = form.get("file")
        if not isinstance(file, StarletteUploadFile):
            raise invalid_request("file", "Field required")
        stored = await _store(ctx, file, cap)
    finally:
        await form.close()
    key, size = stored
    signed = ctx.signer.sign(key, ctx.settings.output_url_ttl_s)
    return {
        "url": signed.url,
        "key": key,
        "size_bytes": size,
        "expires_at": iso_utc(signed.expires_at.replace(tzinfo=None)),
    }
