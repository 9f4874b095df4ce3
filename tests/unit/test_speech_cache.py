"""The own-speech cache: keys, bounds and isolation."""
from __future__ import annotations

import numpy as np
import pytest

from orchestrator.dubbing.speech_cache import SpeechCache


def tracks(value: float) -> tuple[np.ndarray, np.ndarray]:
    return np.full((4, 8), value, np.float32), np.full(4, value, np.float32)


def test_the_key_depends_on_account_samples_and_frame_rate() -> None:
    samples = np.random.default_rng(0).normal(0, 0.1, 16_000).astype(np.float32)
    key = SpeechCache.key("acct_1", samples, 25.0)
    assert key == SpeechCache.key("acct_1", samples.copy(), 25.0)
    changed = samples.copy()
    changed[-1] += 1e-3
    others = {SpeechCache.key("acct_2", samples, 25.0), SpeechCache.key("acct_1", changed, 25.0),
              SpeechCache.key("acct_1", samples, 30.0), SpeechCache.key("acct_1", samples[:-1], 25.0),
              # the account's name cannot run into the rest of the key
              SpeechCache.key("acct_1" + "\x00" * 8, samples, 25.0)}
    assert key not in others and len(others) == 5


def test_least_recently_used_entries_go_first() -> None:
    cache = SpeechCache(max_entries=2, ttl_s=60.0)
    cache.put("a", tracks(1))
    cache.put("b", tracks(2))
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("c", tracks(3))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert len(cache) == 2


def test_entries_expire_and_none_are_kept_when_off() -> None:
    now = [0.0]
    cache = SpeechCache(max_entries=4, ttl_s=10.0, clock=lambda: now[0])
    cache.put("a", tracks(1))
    now[0] = 9.0
    assert cache.get("a") is not None
    now[0] = 10.5
    assert cache.get("a") is None and len(cache) == 0
    off = SpeechCache(max_entries=0, ttl_s=10.0)
    off.put("a", tracks(1))
    assert off.get("a") is None


def test_cached_tracks_are_copies_no_job_can_change() -> None:
    cache = SpeechCache(max_entries=4, ttl_s=60.0)
    params, energy = tracks(1)
    cache.put("a", (params, energy))
    params[:] = 5  # the job that stored them goes on with its own arrays
    cached = cache.get("a")
    assert cached is not None and float(cached[0].max()) == 1.0
    with pytest.raises(ValueError):
        cached[0][0, 0] = 2.0
