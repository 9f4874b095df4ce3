"""The round robin in front of several gateways (`make serve` with LIPSYNCD_GATEWAYS > 1).

A proxy on the one public PORT: each new client connection goes to the next gateway (all
bound to 127.0.0.1) and is relayed both ways until either side closes. A gateway that refuses
the connection (killed, restarting) is skipped and the next one tried.

It reads just enough HTTP/1.1 to know where each request starts: a request that is safe to
send twice, and that its gateway dropped before answering a byte (killed mid-request, or a
keep-alive connection closed under it), is sent again to the next gateway. Safe means GET,
HEAD or OPTIONS without a body, or any request carrying an `Idempotency-Key` (the gateway
answers a replay with the same job) whose body is at most `REPLAY_BODY_LIMIT` bytes. Anything
else dropped mid-request is lost with its connection, as with any TCP proxy. A request with a
chunked body or an upgrade turns the connection into a plain two-way pipe.

Run: `python deploy/local/proxy.py --listen 0.0.0.0:8000 --backend 127.0.0.1:8101 ...`
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal

log = logging.getLogger("lipsyncd.proxy")
CONNECT_TIMEOUT_S = 2.0
CHUNK = 64 * 1024


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
REPLAY_BODY_LIMIT = 1024 * 1024  # a replayable body is kept in memory until its answer starts


class RoundRobin:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self._turn = itertools.cycle(range(len(backends)))

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for _ in range(len(self.backends)):
            host, port = self.backends[next(self._turn)]
            try:
                return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                log.warning("gateway %s:%d unreachable (%s); trying the next", host, port, exc)
        raise ConnectionError("no gateway reachable")

    async def serve_client(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            backend = await self.connect()
        except ConnectionError as exc:
            log.error("%s", exc)
            client_writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            with contextlib.suppress(OSError):
                await client_writer.drain()
            client_writer.close()
            return
        await _Relay(self, client_reader, client_writer, backend).run()


class _Relay:
    """One client connection: requests go to the current gateway, its answers back; a
    replayable request whose gateway closed before answering goes to the next gateway."""

    def __init__(self, balancer: RoundRobin, client_reader: asyncio.StreamReader,
                 client_writer: asyncio.StreamWriter,
                 backend: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.balancer = balancer
        self.client_reader = client_reader
        self.client_writer = client_writer
        self.backend_reader, self.backend_writer = backend
        self.answered = 0  # bytes relayed to the client so far
        # The last request if it may be sent again, and `answered` when it was sent.
        self.replayable: tuple[bytes, int] | None = None
        self.replays = 0  # of that request: each gateway gets it at most once more

    async def run(self) -> None:
        answers = asyncio.create_task(self._answers())
        try:
            await self._requests()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            log.debug("client connection ends: %r", exc)
        finally:
            if not answers.done():  # the client is done sending; its answer may still come
                with contextlib.suppress(OSError):
                    if self.backend_writer.can_write_eof():
                        self.backend_writer.write_eof()
            await answers

    async def _requests(self) -> None:
        while True:
            try:
                head = await self.client_reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    await self._send(exc.partial)
                return
            method, length, streamed = _framing(head)
            if streamed:  # chunked body or an upgrade: a plain pipe from here on
                self.replayable = None
                await self._send(head)
                while data := await self.client_reader.read(CHUNK):
                    await self._send(data)
                return
            lowered = head.lower()
            # With Expect: 100-continue the body comes only after the gateway's go-ahead.
            idempotent = b"\nidempotency-key:" in lowered and b"\nexpect:" not in lowered
            if (method in SAFE_METHODS and length == 0) or (idempotent and length <= REPLAY_BODY_LIMIT):
                request = head + (await self.client_reader.readexactly(length) if length else b"")
                self.replayable = (request, self.answered)
                self.replays = 0
                await self._send(request)
                continue
            self.replayable = None
            await self._send(head)
            remaining = length
            while remaining:
                data = await self.client_reader.read(min(CHUNK, remaining))
                if not data:
                    return
                remaining -= len(data)
                await self._send(data)

    async def _send(self, data: bytes) -> None:
        """To the current gateway; a failed write is left to `_answers`, which sees the
        same connection end and sends a replayable request again."""
        try:
            self.backend_writer.write(data)
            await self.backend_writer.drain()
        except OSError as exc:
            log.debug("gateway write failed: %r", exc)

    async def _answers(self) -> None:
        try:
            while True:
                try:
                    while data := await self.backend_reader.read(CHUNK):
                        self.answered += len(data)
                        self.client_writer.write(data)
                        await self.client_writer.drain()
                except OSError as exc:
                    log.debug("gateway connection ends: %r", exc)
                if not await self._replay():
                    return
        finally:
            self.backend_writer.close()
            self.client_writer.close()
            for writer in (self.backend_writer, self.client_writer):
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def _replay(self) -> bool:
        """After the gateway closed: the unanswered replayable request to the next one."""
        if self.replayable is None or self.replayable[1] != self.answered or self.client_reader.at_eof():
            return False
        if self.replays >= len(self.balancer.backends):
            log.error("every gateway dropped %r; giving up", self.replayable[0].split(b"\r\n", 1)[0].decode("latin-1"))
            return False
        self.replays += 1
        request = self.replayable[0]
        self.backend_writer.close()
        try:
            self.backend_reader, self.backend_writer = await self.balancer.connect()
        except ConnectionError as exc:
            log.error("%s; a dropped request is lost", exc)
            return False
        log.warning("gateway closed before answering %r; sent again to the next one",
                    request.split(b"\r\n", 1)[0].decode("latin-1"))
        await self._send(request)
        return True


def _framing(head: bytes) -> tuple[bytes, int, bool]:
    """(method, Content-Length, streamed) of a request head; streamed: a chunked body or an
    upgrade, whose end this proxy does not track."""
    lines = head.split(b"\r\n")
    method = lines[0].split(b" ", 1)[0]
    length = 0
    streamed = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
            if length < 0:
                raise ValueError("negative Content-Length")
        elif name in (b"transfer-encoding", b"upgrade"):
            streamed = True
    return method, length, streamed


async def serve(listen: tuple[str, int], backends: list[tuple[str, int]]) -> None:
    balancer = RoundRobin(backends)
    server = await asyncio.start_server(balancer.serve_client, listen[0], listen[1], reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("proxy on %s:%d to %s", *listen, ", ".join(f"{h}:{p}" for h, p in backends))
    async with server:
        await stop.wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="host:port to accept clients on")
    parser.add_argument("--backend", action="append", required=True, help="host:port of a gateway")
    args = parser.parse_args()
    asyncio.run(serve(_address(args.listen), [_address(b) for b in args.backend]))


if __name__ == "__main__":
    main()
