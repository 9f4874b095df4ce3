"""Batches in flight: the generator renders the next batches on Triton while this process
composes and encodes the current one, so both cores work; and abandoning tasks cleanly
when a job stops part-way."""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from orchestrator.stages import RENDER_AHEAD

log = logging.getLogger(__name__)
T = TypeVar("T")


async def pipelined(spans: list[tuple[int, int]], render: Callable[[int, int], Awaitable[T]],
                    compose: Callable[[int, int, T], Awaitable[None]]) -> None:
    """render(start, stop) every span, RENDER_AHEAD spans ahead of compose(start, stop,
    rendered), which takes them in order."""
    ahead: deque[asyncio.Future[T]] = deque()
    queued = 0
    try:
        for start, stop in spans:
            while queued < len(spans) and len(ahead) <= RENDER_AHEAD:
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
