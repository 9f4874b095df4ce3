"""The gateway's reaper loop stops when the gateway shuts down, even when a round swallows
the cancel (nats-py can turn a cancelled status read into a timeout)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from gateway import upkeep


async def test_the_reaper_stops_on_shutdown_even_if_a_round_swallows_the_cancel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rounds = 0

    async def round_that_swallows_cancels(ctx: object) -> int:
        nonlocal rounds
        rounds += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass  # as a status read whose cancel came back as a timeout, taken for a bus outage
        return 0

    monkeypatch.setattr(upkeep, "reap_stale_jobs", round_that_swallows_cancels)
    ctx = SimpleNamespace(settings=SimpleNamespace(reaper_interval_s=0.01))
    stop = asyncio.Event()
    reaper = asyncio.create_task(upkeep.reap_periodically(ctx, stop))  # type: ignore[arg-type]
    while rounds == 0:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.01)  # inside a round now
    stop.set()
    reaper.cancel()
    done, _ = await asyncio.wait({reaper}, timeout=2.0)
    assert reaper in done, "the reaper kept going after shutdown"


async def test_the_reaper_runs_rounds_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    rounds = 0

    async def count(ctx: object) -> int:
        nonlocal rounds
        rounds += 1
        return 0

    monkeypatch.setattr(upkeep, "reap_stale_jobs", count)
    stop = asyncio.Event()
    reaper = asyncio.create_task(upkeep.reap_periodically(SimpleNamespace(settings=SimpleNamespace(  # type: ignore[arg-type]
        reaper_interval_s=0.01)), stop))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(reaper, 1.0)
    assert rounds >= 3
