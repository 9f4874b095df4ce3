"""Request bodies bounded before they are read: a plain ASGI middleware (it sees the body
as it streams, unlike `BaseHTTPMiddleware`) that answers 413 as soon as the declared
Content-Length or the count of bytes received so far passes the route's limit."""
from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proto.vocabulary import ErrorCode

UPLOAD_PATH = "/api/v1/uploads"
# The dashboard's playground form carries up to three media files (a face and two voices).
PLAYGROUND_PATH = "/playground"
PLAYGROUND_FILES = 3
# Multipart framing around the file: a request a little over the file cap is still fine.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the streamed body passes the limit; an HTTPException so
    that FastAPI's body parsing lets it through to the error handlers (413)."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(413, f"The request body is limited to {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_json_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes

    def limit_for(self, path: str) -> int:
        if path.rstrip("/") == UPLOAD_PATH:
            return self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
        if path.rstrip("/") == PLAYGROUND_PATH:
            return PLAYGROUND_FILES * self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
        return self.max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, limit)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_413(send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps({
        "error": f"The request body is limited to {limit} bytes",
        "error_code": ErrorCode.PAYLOAD_TOO_LARGE,
    }).encode()
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    })
    await send({"type": "http.response.body", "body": body})
