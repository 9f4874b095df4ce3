"""A light closed-loop HTTP load generator: N asyncio workers, each with its own keep-alive
HTTP/1.1 connection, send requests back to back for a fixed time; latencies are kept per
request. Written on asyncio streams because httpx's pool spends ~25x more CPU per request
at 50 connections, which on a 2-core machine starves the server being measured."""
from __future__ import annotations

import asyncio
import itertools
import json as jsonlib
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.bench.stats import percentile, ratio

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RequestSpec:
    method: str
    path: str
    json: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, host: str) -> bytes:
        body = b"" if self.json is None else jsonlib.dumps(self.json).encode()
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}", "Accept: application/json"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        if self.json is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class LoadResult:
    name: str
    duration_s: float
    latencies_s: tuple[float, ...]      # successful (2xx) requests only
    errors: int                         # non-2xx answers and transport errors
    status_counts: dict[int, int]
    client_cpu_s: float                 # CPU the load generator itself used

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput_rps(self) -> float:
        return ratio(self.ok, self.duration_s)

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_s, 0.50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_s, 0.99) * 1000

    @property
    def client_cpu_share(self) -> float:
        """Load generator CPU as a fraction of one core over the run."""
        return ratio(self.client_cpu_s, self.duration_s)


class ProtocolError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; its status code and whether the connection may be reused."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ProtocolError(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return int(parts[1]), headers.get("connection") != "close"


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


async def _worker(host: str, port: int, make: Callable[[int], RequestSpec], numbers: Iterator[int],
                  stop_at: float, tally: _Tally) -> None:
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.perf_counter() < stop_at:
        payload = make(next(numbers)).encode(f"{host}:{port}")
        started = time.perf_counter()
        try:
            if connection is None:
                connection = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT_S)
            reader, writer = connection
            writer.write(payload)
            await writer.drain()
            code, keep = await asyncio.wait_for(read_response(reader), TIMEOUT_S)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ProtocolError, ValueError):
            code, keep = 0, False  # transport error: counted, not timed
        elapsed = time.perf_counter() - started
        tally.statuses[code] = tally.statuses.get(code, 0) + 1
        if 200 <= code < 300:
            tally.latencies.append(elapsed)
        if not keep and connection is not None:
            connection[1].close()
            connection = None
    if connection is not None:
        connection[1].close()


async def _run(base_url: str, name: str, make: Callable[[int], RequestSpec], concurrency: int,
               duration_s: float, warmup_s: float) -> LoadResult:
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    numbers = itertools.count(1)  # one sequence for all workers: make(n) sees each n once
    if warmup_s > 0:
        stop_at = time.perf_counter() + warmup_s
        await asyncio.gather(*(_worker(host, port, make, numbers, stop_at, _Tally()) for _ in range(concurrency)))
    tallies = [_Tally() for _ in range(concurrency)]
    cpu_before, started = _cpu_s(), time.perf_counter()
    await asyncio.gather(*(_worker(host, port, make, numbers, started + duration_s, t) for t in tallies))
    elapsed = time.perf_counter() - started
    cpu_used = _cpu_s() - cpu_before
    statuses: dict[int, int] = {}
    for tally in tallies:
        for code, count in tally.statuses.items():
            statuses[code] = statuses.get(code, 0) + count
    latencies = tuple(lat for tally in tallies for lat in tally.latencies)
    return LoadResult(name=name, duration_s=elapsed, latencies_s=latencies,
                      errors=sum(n for code, n in statuses.items() if not 200 <= code < 300),
                      status_counts=statuses, client_cpu_s=cpu_used)


def run_load(base_url: str, name: str, make: Callable[[int], RequestSpec], concurrency: int = 50,
             duration_s: float = 10.0, warmup_s: float = 1.0) -> LoadResult:
    """Run `concurrency` closed-loop clients against `base_url` (plain http) for `duration_s`,
    after a warm-up whose requests are not counted; `make(n)` builds the n-th request."""
    return asyncio.run(_run(base_url, name, make, concurrency, duration_s, warmup_s))
