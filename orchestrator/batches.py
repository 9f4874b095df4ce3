"""Batches in flight: the generator renders the next batches on Triton while this process
composes and encodes the current one, so both cores work; and abandoning tasks cleanly
when a job stops part-way."""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


EDGE_FRAMES = 5  # the first and the last span of a render are this short


def batch_spans(count: int, batch: int) -> list[tuple[int, int]]:
    """[start, stop) spans over `count` frames: `batch` frames each, except a short first and
    last span, so that composing starts soon after the first render and little is left to
    compose once the last render is done. A render of at most one batch is one span."""
    if count <= batch:
        return [(0, count)] if count > 0 else []
    edge = min(EDGE_FRAMES, batch)
    bounds = [0] + ([edge] if count > 2 * edge else [])
    bounds += list(range(bounds[-1] + batch, count - edge, batch))
    bounds += [count - edge] if count - edge > bounds[-1] else []
    return list(zip(bounds, bounds[1:] + [count], strict=True))


async def pipelined(spans: list[tuple[int, int]], render: Callable[[int, int], Awaitable[T]],
                    compose: Callable[[int, int, T], Awaitable[None]], render_ahead: int = 1) -> None:
    """render(start, stop) every span, `render_ahead` spans ahead of compose(start, stop,
    rendered), which takes them in order. The first span renders alone: two requests sent
    together may reach the stage in either order, and the first compose would then wait
    for two renders."""
    ahead: deque[asyncio.Future[T]] = deque()
    queued = 0
    try:
        if spans:
            ahead.append(asyncio.ensure_future(render(*spans[0])))
            queued = 1
            await asyncio.wait([ahead[0]])
        for start, stop in spans:
            while queued < len(spans) and len(ahead) <= render_ahead:
                ahead.append(asyncio.ensure_future(render(*spans[queued])))
                queued += 1
            await compose(start, stop, await ahead.popleft())
    finally:
        await abandon(ahead)  # canceled or failed mid-way: do not leave later batches running


async def abandon(tasks: Iterable[asyncio.Future[T]], cancel: bool = True) -> None:
    """Cancel the tasks that are still running (or, cancel=False, let them finish) and wait
    for them. The job is already stopping; what these failed with on their own is logged,
    not lost."""
    tasks = list(tasks)
    for task in tasks if cancel else ():
        task.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception):
            log.warning("abandoned task had failed too: %r", outcome)
