"""Pipelined rendering: spans composed in order while later ones render, and tasks left
behind by a failing job are canceled, their own failures logged rather than lost."""
from __future__ import annotations

import asyncio
import logging

import pytest

from orchestrator.batches import abandon, pipelined


async def test_spans_are_composed_in_order_with_renders_running_ahead() -> None:
    events: list[str] = []

    async def render(start: int, stop: int) -> int:
        events.append(f"render {start}")
        await asyncio.sleep(0.01 if start == 0 else 0)
        return start * 10

    async def compose(start: int, stop: int, rendered: int) -> None:
        events.append(f"compose {start}={rendered}")

    await pipelined([(0, 2), (2, 4), (4, 5)], render, compose)
    assert [e for e in events if e.startswith("compose")] == ["compose 0=0", "compose 2=20", "compose 4=40"]
    assert events.index("render 2") < events.index("compose 0=0")  # the next batch renders meanwhile


async def test_a_failing_compose_cancels_the_renders_ahead() -> None:
    started: list[int] = []

    async def render(start: int, stop: int) -> int:
        started.append(start)
        await asyncio.sleep(10)
        return start

    async def compose(start: int, stop: int, rendered: int) -> None:
        raise RuntimeError("encoder broke")

    async def first_fast(start: int, stop: int) -> int:
        return start if start == 0 else await render(start, stop)

    with pytest.raises(RuntimeError, match="encoder broke"):
        await asyncio.wait_for(pipelined([(0, 1), (1, 2), (2, 3)], first_fast, compose), 2)
    assert started == [1]  # one span ahead, canceled with the job


async def test_abandoned_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise ValueError("stage answered garbage")

    task = asyncio.ensure_future(fails())
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="orchestrator.batches"):
        await abandon([task])
    assert "stage answered garbage" in caplog.text
