"""The database-backed rate limiter (gateway/api/ratelimit.py) on a real SQLite database
with the real migrations: fixed one-minute windows, Retry-After, separate buckets, two
limiter instances (two replicas) sharing one count, and old windows pruned."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.api.ratelimit import DatabaseRateLimiter
from gateway.db import Database
from gateway.models import RateLimitWindow


class Clock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'limits.db'}")
    database.migrate()
    yield database
    database.dispose()


async def test_limit_per_fixed_window_then_retry_after_the_window_ends(db: Database) -> None:
    clock = Clock(1_000_040.0)  # 20 s into the window that starts at 1_000_020 (a multiple of 60)
    limiter = DatabaseRateLimiter(db, clock=clock)
    assert [await limiter.hit("key:a", 3) for _ in range(3)] == [None, None, None]
    assert await limiter.hit("key:a", 3) == 40
    clock.now_s = 1_000_079.5
    assert await limiter.hit("key:a", 3) == 1
    assert await limiter.hit("key:b", 3) is None  # another bucket counts on its own
    clock.now_s = 1_000_080.0  # a new window
    assert await limiter.hit("key:a", 3) is None


async def test_two_replicas_share_one_count(db: Database, tmp_path: Path) -> None:
    clock = Clock(2_000_010.0)
    other_db = Database(f"sqlite:///{tmp_path / 'limits.db'}")  # its own engine, like a replica
    try:
        first, second = DatabaseRateLimiter(db, clock=clock), DatabaseRateLimiter(other_db, clock=clock)
        results = [await (first if i % 2 else second).hit("key:x", 4) for i in range(6)]
    finally:
        other_db.dispose()
    assert results[:4] == [None] * 4 and all(r is not None for r in results[4:])


async def test_windows_older_than_the_previous_one_are_pruned(db: Database) -> None:
    clock = Clock(3_000_000.0)  # a window start (50000 minutes)
    limiter = DatabaseRateLimiter(db, clock=clock)
    await limiter.hit("key:old", 5)
    clock.now_s += 60
    await limiter.hit("key:new", 5)
    clock.now_s += 60
    await limiter.hit("key:new", 5)
    rows = db.run(lambda s: [(r.bucket, r.window_start, r.count) for r in s.scalars(select(RateLimitWindow))])
    assert sorted(rows) == [("key:new", 3_000_060, 1), ("key:new", 3_000_120, 1)]
