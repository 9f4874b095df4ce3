"""The gateway's body limits per route: one upload's size on the upload route, two on the
dashboard's playground form (a picture or video and an audio file), the small JSON limit on
everything else. Driven through the ASGI middleware itself with declared and streamed bodies."""
from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from gateway.api.bodylimit import MULTIPART_OVERHEAD_BYTES, PLAYGROUND_FILES, BodyLimit

MAX_JSON = 1024
MAX_UPLOAD = 10_000


async def _read_all(scope: Scope, receive: Receive, send: Send) -> None:
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


async def _status(path: str, *, declared: int | None = None, streamed: int = 0) -> int:
    limit = BodyLimit(_read_all, max_json_bytes=MAX_JSON, max_upload_bytes=MAX_UPLOAD)
    headers = [(b"content-length", str(declared).encode())] if declared is not None else []
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    chunks = [b"x" * 1000] * (streamed // 1000) + [b"x" * (streamed % 1000)]
    sent: list[Message] = []

    async def receive() -> Message:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    await limit(scope, receive, send)
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


async def test_the_playground_takes_its_uploads_and_no_more() -> None:
    # A face and two voices for a conversation.
    assert PLAYGROUND_FILES == 3
    cap = PLAYGROUND_FILES * MAX_UPLOAD + MULTIPART_OVERHEAD_BYTES
    assert await _status("/playground", declared=cap, streamed=cap) == 200
    assert await _status("/playground", declared=cap + 1) == 413
    assert await _status("/playground", streamed=cap + 1) == 413  # chunked, no length declared


async def test_the_upload_route_takes_one_and_other_routes_the_json_limit() -> None:
    one = MAX_UPLOAD + MULTIPART_OVERHEAD_BYTES
    assert await _status("/api/v1/uploads", declared=one, streamed=one) == 200
    assert await _status("/api/v1/uploads", declared=one + 1) == 413
    assert await _status("/keys", declared=MAX_JSON + 1) == 413
    assert await _status("/keys", streamed=MAX_JSON + 1) == 413
    assert await _status("/keys", declared=MAX_JSON, streamed=MAX_JSON) == 200
