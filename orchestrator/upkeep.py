"""Housekeeping that keeps an orchestrator from filling its disk: each process's own scratch
root (the roots of processes that died are removed at start, with the job directories their
killed attempts left), the free-space check made before a job is taken, and the periodic
sweep that deletes uploads and outputs once they have expired."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from postprocess.storage import Storage
from proto.stageclient import pid_alive

log = logging.getLogger(__name__)

EXPIRING_PREFIXES = ("uploads/", "outputs/")
_ROOT_PREFIX = "orch-"


def claim_scratch_root(base: Path) -> Path:
    """This process's scratch root under `base` (orch-<host>-<pid>), made empty. The roots
    of this host's processes that are gone are removed, and so are job directories left
    directly under `base` by earlier versions; other hosts' roots (a shared volume) are
    left to their owners."""
    base.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace("-", "_")
    mine = base / f"{_ROOT_PREFIX}{host}-{os.getpid()}"
    for entry in base.iterdir():
        owner_host, _, pid = entry.name.removeprefix(_ROOT_PREFIX).rpartition("-")
        if entry.name.startswith(_ROOT_PREFIX):
            if owner_host != host or not pid.isdigit():
                continue
            if entry != mine and pid_alive(int(pid)):
                continue
        log.info("removing scratch left by a stopped process: %s", entry)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    mine.mkdir()
    return mine


def free_disk_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def sweep_expired(storage: Storage, retention_s: float, now_s: float | None = None) -> int:
    """Delete uploads and outputs older than `retention_s`; returns how many went."""
    cutoff = (time.time() if now_s is None else now_s) - retention_s
    removed = sum(storage.delete_older_than(prefix, cutoff) for prefix in EXPIRING_PREFIXES)
    if removed:
        log.info("deleted %d expired files", removed)
    return removed


async def sweep_periodically(storage: Storage, retention_s: float, interval_s: float,
                             stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.to_thread(sweep_expired, storage, retention_s)
        except OSError:
            log.exception("sweeping expired files failed; trying again later")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
