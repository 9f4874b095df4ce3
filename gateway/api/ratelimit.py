"""Per-key request rate limits. One gateway process alone counts in memory (a sliding
one-minute window, `RateLimiter`); gateway replicas share the count in the database
(`DatabaseRateLimiter`: one row per bucket per fixed one-minute window, bumped by one atomic
upsert per request), so N replicas together allow the plan's limit, not N times it.
LIPSYNCD_RATE_LIMIT_STORE picks: `auto` (database on PostgreSQL, memory on SQLite),
`memory` or `database`."""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway.db import Database
from gateway.models import RateLimitWindow

WINDOW_S = 60.0


class RateLimiter:
    def __init__(self, window_s: float = WINDOW_S) -> None:
        self._window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, bucket: str, limit_per_window: int, now_s: float | None = None) -> int | None:
        """Count one request; None if allowed, else the seconds to wait (Retry-After)."""
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            hits = self._hits.setdefault(bucket, deque())
            while hits and hits[0] <= now_s - self._window_s:
                hits.popleft()
            if len(hits) >= limit_per_window:
                return max(1, math.ceil(hits[0] + self._window_s - now_s))
            hits.append(now_s)
            return None

    async def hit(self, bucket: str, limit_per_window: int) -> int | None:
        return self.check(bucket, limit_per_window)


class RequestLimiter(Protocol):
    async def hit(self, bucket: str, limit_per_window: int) -> int | None:
        """Count one request; None if allowed, else the seconds to wait (Retry-After)."""


def _count_hit(session: Session, bucket: str, window_start: int) -> int:
    """Add one to the bucket's counter for this window and return the new count: a single
    INSERT .. ON CONFLICT DO UPDATE .. RETURNING, atomic under concurrent replicas."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(RateLimitWindow).values(bucket=bucket, window_start=window_start, count=1)
    statement = statement.on_conflict_do_update(
        index_elements=[RateLimitWindow.bucket, RateLimitWindow.window_start],
        set_={"count": RateLimitWindow.count + 1},
    ).returning(RateLimitWindow.count)
    return int(session.execute(statement).scalar_one())


def _prune(session: Session, before: int) -> None:
    session.execute(delete(RateLimitWindow).where(RateLimitWindow.window_start < before))


class DatabaseRateLimiter:
    """A fixed-window counter in the shared database. At a window boundary a client can
    get up to twice the limit within a minute's span (the price of one row per minute);
    each process deletes windows older than the previous one once per window."""

    def __init__(self, db: Database, window_s: int = int(WINDOW_S),
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._window_s = window_s
        self._clock = clock
        self._pruned_window = -1

    async def hit(self, bucket: str, limit_per_window: int) -> int | None:
        now_s = self._clock()
        window_start = int(now_s // self._window_s) * self._window_s
        count = await self._db.run_async(lambda s: _count_hit(s, bucket, window_start))
        if window_start != self._pruned_window:
            self._pruned_window = window_start
            await self._db.run_async(lambda s: _prune(s, window_start - self._window_s))
        if count > limit_per_window:
            return max(1, math.ceil(window_start + self._window_s - now_s))
        return None
