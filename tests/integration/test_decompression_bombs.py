"""Decompression bombs over real loopback HTTP: a server that answers a
media fetch, and a webhook receiver that answers the delivery, with a body declared
`Content-Encoding: gzip, gzip` that expands 50 MiB. Neither the fetcher nor the webhook
sender may decode it, and their peak memory stays small."""
from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from orchestrator.fetch import FetchError, HttpFetcher, MediaKind
from postprocess.webhooks import HttpWebhookSender, WebhookDelivery, webhook_id_for

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
EXPANDED_BYTES = 50 * MiB
BOMB = gzip.compress(gzip.compress(bytes(EXPANDED_BYTES), 9), 9)


class BombServer:
    """Answers every GET and POST with the stacked-gzip bomb; records Accept-Encoding."""

    def __init__(self) -> None:
        self.accept_encodings: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def _bomb(self) -> None:
                outer.accept_encodings.append(self.headers.get("Accept-Encoding"))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Encoding", "gzip, gzip")
                self.send_header("Content-Length", str(len(BOMB)))
                self.end_headers()
                self.wfile.write(BOMB)

            do_GET = _bomb  # noqa: N815
            do_POST = _bomb  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def bomb_server() -> Iterator[BombServer]:
    server = BombServer()
    yield server
    server.close()


def test_the_bomb_is_small_and_expands_to_50_mib() -> None:
    assert len(BOMB) < 1024
    assert len(gzip.decompress(gzip.decompress(BOMB))) == EXPANDED_BYTES


async def test_media_fetch_refuses_a_stacked_gzip_bomb_with_bounded_memory(
    bomb_server: BombServer, tmp_path: Path
) -> None:
    dest = tmp_path / "video"
    tracemalloc.start()
    try:
        with pytest.raises(FetchError) as info:
            await HttpFetcher(allow_private=True).fetch(
                f"{bomb_server.url}/bomb.mp4", dest, MediaKind.VIDEO, 1 * MiB
            )
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "download_failed"
    assert "Content-Encoding: gzip, gzip" in info.value.message
    assert "only uncompressed downloads" in info.value.message
    assert peak < 4 * MiB, f"peak {peak / MiB:.1f} MiB while refusing the bomb"
    assert not dest.exists()
    assert bomb_server.accept_encodings == ["identity"]


async def test_webhook_sender_never_decodes_the_receivers_reply(
    bomb_server: BombServer,
) -> None:
    sender = HttpWebhookSender(allow_private=True)
    hook = WebhookDelivery(
        webhook_id_for("j1"), "j1", f"{bomb_server.url}/hook", "whsec_" + "A" * 32,
        b'{"id": "j1", "status": "completed"}',
    )
    tracemalloc.start()
    try:
        result = await sender.send(hook)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok and result.status_code == 200
    assert peak < 4 * MiB, f"peak {peak / MiB:.1f} MiB while delivering"
    assert bomb_server.accept_encodings == ["identity"]
