"""The source video's own speech, analysed once per account.

A dub learns how its speaker's mouth follows speech from the video's own soundtrack, through a
second audio_features pass over it (`articulation.py`): on a short dub that pass is about a
sixth of the job's CPU. The same video dubbed again (another language, another script) has the
same soundtrack, so its mouth tracks are kept here, in this orchestrator's memory, keyed by the
account and a hash of the decoded samples and the frame rate: another account's jobs never see
them (nor learn, by a faster job, that a video was dubbed before). Bounded in entries (least
recently used go first) and in age (an entry older than `ttl_s` is analysed again, so a stage
model replaced under a running orchestrator is heard within that time).
"""
from __future__ import annotations

import hashlib
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Tracks = tuple[np.ndarray, np.ndarray]  # mouth parameters [T, P] and energy [T], as the stage answers


@dataclass(frozen=True)
class _Entry:
    tracks: Tracks
    stored_at: float


def _frozen(array: np.ndarray) -> np.ndarray:
    copy = np.array(array, copy=True)
    copy.setflags(write=False)
    return copy


class SpeechCache:
    """Own-speech mouth tracks by (account, samples, fps); `max_entries` 0 keeps nothing."""

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries, self.ttl_s, self._clock = max_entries, ttl_s, clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    @staticmethod
    def key(account_id: str, samples: np.ndarray, fps: float) -> str:
        digest = hashlib.sha256()
        account = account_id.encode()
        digest.update(struct.pack("<Q", len(account)) + account + struct.pack("<d", float(fps)))
        digest.update(np.ascontiguousarray(samples, np.float32).data)
        return digest.hexdigest()

    def get(self, key: str) -> Tracks | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry.stored_at > self.ttl_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.tracks

    def put(self, key: str, tracks: Tracks) -> None:
        if self.max_entries <= 0:
            return
        self._entries[key] = _Entry((_frozen(tracks[0]), _frozen(tracks[1])), self._clock())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
