"""The client-side round robin over Triton servers: calls alternate, a server that fails
with a transport error is skipped and the call retried on another, a request error is not
retried, and a server comes back once its readiness check passes."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from orchestrator.stages import AudioFeatures
from orchestrator.triton_pool import PoolSettings, TritonPool
from proto.stages import StageUnavailable


class FakeServer:
    """A per-server client whose answers the test scripts: up or down, a bad request."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.up = True
        self.bad_request = False
        self.calls = 0

    async def audio_features(self, audio_16k: np.ndarray, fps: float,
                             part: tuple[int, int] = (0, 1)) -> AudioFeatures:
        self.calls += 1
        if self.bad_request:
            try:
                raise InferenceServerException("bad shape", status="StatusCode.INVALID_ARGUMENT")
            except InferenceServerException as exc:
                raise StageUnavailable("audio_features: bad shape") from exc
        if not self.up:
            try:
                raise InferenceServerException("Socket closed", status="StatusCode.UNAVAILABLE")
            except InferenceServerException as exc:
                raise StageUnavailable("audio_features: Socket closed") from exc
        return AudioFeatures(mouth_params=np.zeros((1, 8), np.float32), energy=np.array([float(self.url[-1])]))

    async def ready(self) -> bool:
        return self.up

    async def close(self) -> None:
        return None


def _pool(count: int) -> tuple[TritonPool, dict[str, FakeServer]]:
    servers: dict[str, FakeServer] = {}

    def factory(url: str) -> FakeServer:
        servers[url] = FakeServer(url)
        return servers[url]

    pool = TritonPool([f"t{i}" for i in range(1, count + 1)],
                      PoolSettings(probe_interval_s=0.05, all_down_wait_s=1.0),
                      client_factory=factory)  # type: ignore[arg-type]
    return pool, servers


async def _who(pool: TritonPool) -> int:
    return int((await pool.audio_features(np.zeros(16), 25.0)).energy[0])


async def test_calls_alternate_and_a_dead_server_is_skipped_then_back() -> None:
    pool, servers = _pool(2)
    assert [await _who(pool) for _ in range(4)] == [1, 2, 1, 2]
    servers["t1"].up = False
    assert [await _who(pool) for _ in range(4)] == [2, 2, 2, 2]  # the failed call retried on t2
    assert servers["t1"].calls == 3  # tried once, then skipped while down
    servers["t1"].up = True
    await asyncio.sleep(0.2)  # the probe sees it ready again
    assert sorted([await _who(pool) for _ in range(2)]) == [1, 2]
    await pool.close()


async def test_a_bad_request_is_not_retried_elsewhere() -> None:
    pool, servers = _pool(2)
    servers["t1"].bad_request = servers["t2"].bad_request = True
    with pytest.raises(StageUnavailable):
        await pool.audio_features(np.zeros(16), 25.0)
    assert servers["t1"].calls + servers["t2"].calls == 1
    assert all(s["healthy"] for s in pool.stats().values())
    await pool.close()


async def test_all_down_waits_for_one_to_return_else_fails() -> None:
    pool, servers = _pool(2)
    for server in servers.values():
        server.up = False
    with pytest.raises(StageUnavailable, match="no Triton server available"):
        await pool.audio_features(np.zeros(16), 25.0)

    async def revive() -> None:
        await asyncio.sleep(0.3)
        servers["t2"].up = True

    reviving = asyncio.create_task(revive())
    assert await _who(pool) == 2
    await reviving
    await pool.close()
