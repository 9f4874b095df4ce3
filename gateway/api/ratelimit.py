"""Per-key request rate limit: a sliding one-minute window kept in memory (one gateway
process; several replicas each enforce the limit on their own share)."""
from __future__ import annotations

import math
import threading
import time
from collections import deque

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
