"""Loopback servers the tests share: a static media server over the test media (with
paths that misbehave on purpose) and a webhook receiver that records what it is sent."""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.media import MEDIA_DIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class MediaServer(_Server):
    """GET /<file> serves the test media (tests/media.py); /extra/<name> serves bytes registered by tests;
    /status/<code> answers that code; /redirect?to=URL answers 302 to URL."""

    def __init__(self) -> None:
        self.extra: dict[str, tuple[bytes, str]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path.startswith("/status/"):
                    self.send_response(int(path.rsplit("/", 1)[1]))
                    self.end_headers()
                    return
                if path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("to=", 1)[1])
                    self.end_headers()
                    return
                if path.startswith("/extra/") and path[7:] in outer.extra:
                    body, content_type = outer.extra[path[7:]]
                else:
                    file = MEDIA_DIR / path.lstrip("/")
                    if not file.is_file() or ".." in path:
                        self.send_response(404)
                        self.end_headers()
                        return
                    body, content_type = file.read_bytes(), "application/octet-stream"
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, object]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver(_Server):
    """Records every POST; `script` lists status codes (or 'sleep') to answer in turn."""

    deliveries: list[Delivery] = field(default_factory=list)

    def __init__(self) -> None:
        self.deliveries = []
        self.script: dict[str, list[object]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                outer.deliveries.append(Delivery({k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                plan = outer.script.get(self.path, [])
                answer = plan.pop(0) if plan else 200
                if answer == "sleep":
                    time.sleep(15)
                    answer = 200
                self.send_response(int(answer))  # type: ignore[arg-type]
                self.end_headers()

        super().__init__(Handler)

    def for_job(self, job_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.json.get("id") == job_id]
