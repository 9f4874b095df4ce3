"""The round robin in front of several gateways (`make serve` with LIPSYNCD_GATEWAYS > 1).

A TCP proxy on the one public PORT: each new client connection goes to the next gateway
(all bound to 127.0.0.1) and is piped both ways until either side closes. A gateway that
refuses the connection (killed, restarting) is skipped and the next one tried, so a dead
replica costs only the requests that were in flight on it.

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
            backend_reader, backend_writer = await self.connect()
        except ConnectionError as exc:
            log.error("%s", exc)
            client_writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            with contextlib.suppress(OSError):
                await client_writer.drain()
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, backend_writer), _pipe(backend_reader, client_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass  # either side went away: close both
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


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
