"""The spare video decoder: a dub takes a child started before it (its start-up already
done), the next spare starts when the dub is done, and a spare that cannot serve (dead, or
started under another memory cap) is replaced by a fresh child, never handed out."""
from __future__ import annotations

import os
import signal
import time

from preprocess.decode import SpareDecoder
from tests.servers import MEDIA_DIR

VIDEO, SIZE = MEDIA_DIR / "talk_b.mp4", (320, 320)
CAP = 2 * 1024**3


def _pid(decoder: object) -> int:
    return int(decoder._child.pid)  # type: ignore[attr-defined]


def test_a_dub_takes_the_started_spare_and_it_decodes_the_whole_video() -> None:
    spares = SpareDecoder()
    spares.refill(CAP)
    started = spares._spare
    assert started is not None and started.waiting()
    decoder = spares.take(CAP)
    assert decoder is started
    frames = list(decoder.frames(VIDEO, 25.0, SIZE))
    assert len(frames) == 125 and frames[0].shape == (320, 320, 3) and frames[60].std() > 10
    assert not decoder.waiting()
    # Without a spare (none refilled since), a take starts a child of its own.
    fresh = spares.take(CAP)
    assert _pid(fresh) != _pid(decoder) and fresh.waiting()
    fresh.close()


def test_a_spare_under_another_cap_or_dead_is_replaced_and_close_stops_it() -> None:
    spares = SpareDecoder()
    spares.refill(CAP)
    old = spares._spare
    assert old is not None
    other = spares.take(CAP // 2)  # the settings changed: the spare's cap is not this one
    assert other is not old and not old.waiting() and other.waiting()
    other.close()

    spares.refill(CAP)
    dead = spares._spare
    assert dead is not None
    os.kill(_pid(dead), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while dead.waiting() and time.monotonic() < deadline:
        time.sleep(0.05)
    replaced = spares.take(CAP)
    assert replaced is not dead and replaced.waiting()
    assert sum(1 for _ in replaced.frames(VIDEO, 25.0, SIZE)) == 125

    spares.refill(CAP)
    last = spares._spare
    assert last is not None
    spares.close()
    assert not last.waiting() and spares._spare is None
