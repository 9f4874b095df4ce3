"""The round robin in front of the gateways (deploy/local/proxy.py), over real loopback sockets
with httpx as the client: a request that is safe to send twice and that its gateway dropped
before answering (killed mid-request, or a keep-alive connection closed under it) is answered
by the next gateway; a plain POST is never sent twice."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import httpx
import pytest

pytestmark = pytest.mark.integration

PROXY_PATH = Path(__file__).resolve().parents[2] / "deploy" / "local" / "proxy.py"


def _load_proxy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lipsyncd_local_proxy", PROXY_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


proxy = _load_proxy()


@dataclass
class Gateway:
    """A stand-in gateway on a loopback port: answers `answer_first` requests per connection
    with 200 (the body names it and echoes the request body), then closes the connection on
    the next request without answering, as a killed process does."""

    name: str
    answer_first: int
    body_bytes: int = 0
    received: list[tuple[str, bytes]] = field(default_factory=list)
    port: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                self.received.append((head.split(b"\r\n", 1)[0].decode(), body))
                if answered >= self.answer_first:
                    return  # dropped before a byte of the answer
                answered += 1
                payload = json.dumps({"gateway": self.name, "echo": body.decode()}).encode()
                payload += b" " * self.body_bytes
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def front() -> AsyncIterator[tuple[list[Gateway], str]]:
    """Gateway 0 drops every request, gateway 1 answers one request per connection and drops
    the next, gateway 2 answers everything; the proxy starts its round robin at gateway 0."""
    gateways = [Gateway("dropper", 0), Gateway("one-shot", 1), Gateway("steady", 10**6, body_bytes=3 * 2**20)]
    for gateway in gateways:
        await gateway.start()
    balancer = proxy.RoundRobin([("127.0.0.1", g.port) for g in gateways])
    server = await asyncio.start_server(balancer.serve_client, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield gateways, url
    server.close()
    for gateway in gateways:
        await gateway.close()


async def test_a_dropped_get_is_answered_by_the_next_gateway(front: tuple[list[Gateway], str]) -> None:
    gateways, url = front
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        answer = await client.get("/api/v1/jobs/abc")
    assert answer.status_code == 200 and answer.json()["gateway"] == "one-shot"
    assert gateways[0].received == [("GET /api/v1/jobs/abc HTTP/1.1", b"")]
    assert gateways[1].received == [("GET /api/v1/jobs/abc HTTP/1.1", b"")]


async def test_a_post_with_an_idempotency_key_is_sent_again_with_its_body(front: tuple[list[Gateway], str]) -> None:
    gateways, url = front
    body = {"formState": {"image": "https://example.com/a.png", "audio": "https://example.com/a.wav"}}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        answer = await client.post("/api/v1/lipsync-image", json=body, headers={"Idempotency-Key": "k-1"})
    assert answer.status_code == 200
    assert json.loads(answer.json()["echo"]) == body
    assert [line for line, _ in gateways[0].received] == ["POST /api/v1/lipsync-image HTTP/1.1"]
    assert gateways[0].received[0][1] == gateways[1].received[0][1]


async def test_a_plain_post_is_never_sent_twice(front: tuple[list[Gateway], str]) -> None:
    gateways, url = front
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/api/v1/lipsync-image", json={"formState": {}})
    assert len(gateways[0].received) == 1
    assert gateways[1].received == [] and gateways[2].received == []


async def test_a_keep_alive_connection_dropped_under_a_get_is_replayed(front: tuple[list[Gateway], str]) -> None:
    """The first connection's second request finds its gateway gone (one-shot drops it): the
    replay goes on; a 3 MiB answer then comes through whole."""
    gateways, url = front
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        first = await client.get("/one")  # dropper -> one-shot answers
        second = await client.get("/two")  # same connection: one-shot drops it -> steady
        third = await client.get("/three")  # steady, same connection again
    assert [first.json()["gateway"], second.json()["gateway"], third.json()["gateway"]] == [
        "one-shot", "steady", "steady"]
    assert len(third.content) > 3 * 2**20
    assert [line for line, _ in gateways[1].received] == ["GET /one HTTP/1.1", "GET /two HTTP/1.1"]
    assert [line for line, _ in gateways[2].received] == ["GET /two HTTP/1.1", "GET /three HTTP/1.1"]


async def test_a_get_every_gateway_drops_is_given_up_not_replayed_forever() -> None:
    gateways = [Gateway("dropper-a", 0), Gateway("dropper-b", 0)]
    for gateway in gateways:
        await gateway.start()
    balancer = proxy.RoundRobin([("127.0.0.1", g.port) for g in gateways])
    server = await asyncio.start_server(balancer.serve_client, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}",
                                     timeout=10) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/poison")
        # Sent once, then once more to each gateway, then given up.
        assert len(gateways[0].received) + len(gateways[1].received) == 3
    finally:
        server.close()
        for gateway in gateways:
            await gateway.close()
