"""A short-lived in-process cache of verified API keys (SHA-256 of the whole key →
Principal), so a burst of polls does not look the key up in the database every time.

Revoking a key through this process drops it at once. Another replica keeps accepting a
revoked key for at most `ttl_s` (LIPSYNCD_API_KEY_CACHE_TTL_S, 5 s by default; 0 turns the
cache off), and a plan change reaches the rate limit within the same delay."""
from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

from gateway.accounts.principal import Principal

MAX_ENTRIES = 10_000

Lookup = Callable[[], Awaitable[Principal | None]]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyCache:
    """Only keys that verified are kept; unknown or wrong keys always reach the database.
    Concurrent misses for one key share a single lookup. Used from the event loop only."""

    def __init__(self, ttl_s: float, max_entries: int = MAX_ENTRIES) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._pending: dict[str, asyncio.Future[Principal | None]] = {}
        self._generation = 0  # bumped by every invalidation

    @property
    def enabled(self) -> bool:
        return self._ttl_s > 0

    def get(self, token: str, now_s: float | None = None) -> Principal | None:
        return self._get(_digest(token), time.monotonic() if now_s is None else now_s)

    def _get(self, digest: str, now_s: float) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        principal, expires_s = entry
        if now_s >= expires_s:
            del self._entries[digest]
            return None
        return principal

    def put(self, token: str, principal: Principal, now_s: float | None = None) -> None:
        self._put(_digest(token), principal, time.monotonic() if now_s is None else now_s)

    def _put(self, digest: str, principal: Principal, now_s: float) -> None:
        if not self.enabled:
            return
        if len(self._entries) >= self._max_entries:
            self._evict(now_s)
        self._entries[digest] = (principal, now_s + self._ttl_s)

    def _evict(self, now_s: float) -> None:
        expired = [digest for digest, (_, expires_s) in self._entries.items() if expires_s <= now_s]
        for digest in expired:
            del self._entries[digest]
        while len(self._entries) >= self._max_entries:  # all live: drop the oldest
            del self._entries[next(iter(self._entries))]

    async def resolve(self, token: str, lookup: Lookup) -> Principal | None:
        """The cached principal, else the result of `lookup` (cached when it verified)."""
        if not self.enabled:
            return await lookup()
        digest = _digest(token)
        principal = self._get(digest, time.monotonic())
        if principal is not None:
            return principal
        pending = self._pending.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        generation = self._generation
        try:
            principal = await lookup()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: no warning when nobody else waited
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._pending[digest]
        future.set_result(principal)
        # A revocation that landed while the lookup ran must not be undone by caching it.
        if principal is not None and generation == self._generation:
            self._put(digest, principal, time.monotonic())
        return principal

    def invalidate_key(self, key_id: str) -> None:
        self._drop(lambda principal: principal.key_id == key_id)

    def invalidate_account(self, account_id: str) -> None:
        self._drop(lambda principal: principal.account_id == account_id)

    def _drop(self, matches: Callable[[Principal], bool]) -> None:
        self._generation += 1
        for digest in [d for d, (p, _) in self._entries.items() if matches(p)]:
            del self._entries[digest]
