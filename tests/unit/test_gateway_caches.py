"""The gateway's in-process read caches: verified API keys (short TTL, revocation drops
them at once, concurrent misses share one lookup) and finished jobs' views (only final
jobs, per account, bounded)."""
from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

from gateway.accounts.keycache import KeyCache
from gateway.accounts.principal import Principal
from gateway.jobviews import FinishedJobs, JobView

ALICE = Principal("acc-a", "a@example.test", "free", "api", key_id="key-a")
BOB = Principal("acc-b", "b@example.test", "free", "api", key_id="key-b")


class CountingLookup:
    def __init__(self, result: Principal | None, delay_s: float = 0.0) -> None:
        self.result = result
        self.delay_s = delay_s
        self.calls = 0

    async def __call__(self) -> Principal | None:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return self.result


async def test_a_verified_key_is_served_from_memory_until_its_ttl_ends() -> None:
    cache = KeyCache(ttl_s=5.0)
    lookup = CountingLookup(ALICE)
    assert await cache.resolve("sk_a", lookup) == ALICE
    assert await cache.resolve("sk_a", lookup) == ALICE
    assert lookup.calls == 1
    now_s = time.monotonic()
    assert cache.get("sk_a", now_s=now_s + 4.0) == ALICE
    assert cache.get("sk_a", now_s=now_s + 5.1) is None
    assert await cache.resolve("sk_a", lookup) == ALICE
    assert lookup.calls == 2


async def test_unknown_keys_are_never_cached() -> None:
    cache = KeyCache(ttl_s=5.0)
    lookup = CountingLookup(None)
    assert await cache.resolve("sk_wrong", lookup) is None
    assert await cache.resolve("sk_wrong", lookup) is None
    assert lookup.calls == 2


async def test_revoking_a_key_drops_it_and_leaves_other_keys() -> None:
    cache = KeyCache(ttl_s=5.0)
    await cache.resolve("sk_a", CountingLookup(ALICE))
    await cache.resolve("sk_b", CountingLookup(BOB))
    cache.invalidate_key("key-a")
    assert cache.get("sk_a") is None
    assert cache.get("sk_b") == BOB
    cache.invalidate_account("acc-b")
    assert cache.get("sk_b") is None


async def test_a_revocation_during_the_lookup_is_not_undone_by_caching() -> None:
    cache = KeyCache(ttl_s=5.0)
    lookup = CountingLookup(ALICE, delay_s=0.05)
    pending = asyncio.create_task(cache.resolve("sk_a", lookup))
    await asyncio.sleep(0.01)
    cache.invalidate_key("key-a")  # committed while the lookup was reading
    assert await pending == ALICE  # that request started before the revocation
    assert cache.get("sk_a") is None


async def test_concurrent_misses_share_one_lookup() -> None:
    cache = KeyCache(ttl_s=5.0)
    lookup = CountingLookup(ALICE, delay_s=0.02)
    results = await asyncio.gather(*(cache.resolve("sk_a", lookup) for _ in range(20)))
    assert results == [ALICE] * 20
    assert lookup.calls == 1


async def test_a_failed_lookup_fails_every_waiter_and_is_not_cached() -> None:
    cache = KeyCache(ttl_s=5.0)

    async def broken() -> Principal | None:
        await asyncio.sleep(0.01)
        raise RuntimeError("database down")

    results = await asyncio.gather(
        *(cache.resolve("sk_a", broken) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, RuntimeError) for result in results)
    lookup = CountingLookup(ALICE)
    assert await cache.resolve("sk_a", lookup) == ALICE and lookup.calls == 1


async def test_ttl_zero_turns_the_cache_off() -> None:
    cache = KeyCache(ttl_s=0)
    lookup = CountingLookup(ALICE)
    await cache.resolve("sk_a", lookup)
    await cache.resolve("sk_a", lookup)
    assert lookup.calls == 2 and cache.get("sk_a") is None


def test_the_key_cache_is_bounded() -> None:
    cache = KeyCache(ttl_s=5.0, max_entries=3)
    for n in range(5):
        cache.put(f"sk_{n}", ALICE, now_s=100.0 + n)
    assert [cache.get(f"sk_{n}", now_s=105.0) for n in range(5)] == [None, None, ALICE, ALICE, ALICE]


def _view(job_id: str, status: str) -> JobView:
    return JobView(
        id=job_id, model="lipsync-image", status=status, seed=1, form_state_json="{}",
        output_key=None, error="", error_code="", execution_time_ms=None, timings_json=None,
        created_at=dt.datetime(2026, 1, 1), completed_at=None,
    )


@pytest.mark.parametrize("status", ["completed", "failed", "canceled"])
def test_finished_jobs_are_remembered_for_their_account_only(status: str) -> None:
    jobs = FinishedJobs()
    jobs.remember("acc-a", _view("job-1", status))
    assert jobs.get("acc-a", "job-1") == _view("job-1", status)
    assert jobs.get("acc-b", "job-1") is None


def test_a_processing_job_is_never_remembered() -> None:
    jobs = FinishedJobs()
    jobs.remember("acc-a", _view("job-1", "processing"))
    assert jobs.get("acc-a", "job-1") is None


def test_finished_jobs_drop_the_least_recently_read_first() -> None:
    jobs = FinishedJobs(max_entries=2)
    jobs.remember("acc-a", _view("job-1", "completed"))
    jobs.remember("acc-a", _view("job-2", "completed"))
    assert jobs.get("acc-a", "job-1") is not None  # job-2 is now the oldest read
    jobs.remember("acc-a", _view("job-3", "completed"))
    assert jobs.get("acc-a", "job-2") is None
    assert jobs.get("acc-a", "job-1") is not None and jobs.get("acc-a", "job-3") is not None
