"""Pipelined rendering: spans composed in order while later ones render, and tasks left
behind by a failing job are canceled, their own failures logged rather than lost."""
from __future__ import annotations

import asyncio
import logging

import pytest

from orchestrator.batches import EDGE_FRAMES, abandon, batch_spans, pipelined
from orchestrator.stages import TritonStages, render_ahead
from proto.fakestages import FakeAsyncStageClient


async def test_spans_are_composed_in_order_with_renders_running_ahead() -> None:
    events: list[str] = []

    async def render(start: int, stop: int) -> int:
        events.append(f"render {start}")
        await asyncio.sleep(0.01 if start == 0 else 0)
        return start * 10

    async def compose(start: int, stop: int, rendered: int) -> None:
        await asyncio.sleep(0)  # composing runs in a worker thread: the loop goes on meanwhile
        events.append(f"compose {start}={rendered}")

    await pipelined([(0, 2), (2, 4), (4, 5)], render, compose)
    assert [e for e in events if e.startswith("compose")] == ["compose 0=0", "compose 2=20", "compose 4=40"]
    assert events.index("render 2") < events.index("compose 0=0")  # the next batch renders meanwhile


async def test_the_first_span_renders_alone_so_it_reaches_the_stage_first() -> None:
    events: list[str] = []

    async def render(start: int, stop: int) -> int:
        events.append(f"start {start}")
        await asyncio.sleep(0.01)
        events.append(f"done {start}")
        return start

    async def compose(start: int, stop: int, rendered: int) -> None:
        await asyncio.sleep(0)

    await pipelined([(0, 1), (1, 2), (2, 3)], render, compose)
    assert events[:3] == ["start 0", "done 0", "start 1"]


def test_spans_are_short_at_both_ends_and_cover_every_frame_once() -> None:
    assert batch_spans(0, 25) == []
    assert batch_spans(3, 25) == [(0, 3)] and batch_spans(25, 25) == [(0, 25)]
    sizes = [stop - start for start, stop in batch_spans(250, 25)]
    assert sizes[0] == sizes[-1] == EDGE_FRAMES and max(sizes) == 25 and sum(sizes) == 250
    for count in (1, 7, 10, 11, 26, 51, 1000):
        spans = batch_spans(count, 25)
        assert spans[0][0] == 0 and spans[-1][1] == count
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(spans, spans[1:]))


async def test_a_failing_compose_cancels_the_renders_ahead() -> None:
    started: list[int] = []

    async def render(start: int, stop: int) -> int:
        started.append(start)
        await asyncio.sleep(10)
        return start

    async def compose(start: int, stop: int, rendered: int) -> None:
        await asyncio.sleep(0)
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


@pytest.mark.parametrize("ahead", [1, 2])
async def test_renders_run_as_far_ahead_as_the_generator_has_instances(ahead: int) -> None:
    started: list[int] = []
    beyond: list[int] = []  # spans started beyond the one being composed, at each compose

    async def render(start: int, stop: int) -> int:
        started.append(start)
        await asyncio.sleep(0.001)
        return start

    async def compose(start: int, stop: int, rendered: int) -> None:
        await asyncio.sleep(0.02)  # composing is slower than rendering
        beyond.append(len(started) - (start + 1))

    stages = FakeAsyncStageClient(instances={"audio_features": 1, "face_detection": 1, "generator": ahead})
    triton = TritonStages(client=stages)  # type: ignore[arg-type]
    await triton.load_instance_counts()
    await pipelined([(i, i + 1) for i in range(6)], render, compose, render_ahead(triton))
    assert max(beyond) == ahead
