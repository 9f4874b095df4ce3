"""Orchestrator housekeeping on a real filesystem with real processes: scratch left by
killed processes is removed at start, live neighbours' scratch is kept; the expiry sweep
over both storage backends shipped here."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.upkeep import claim_scratch_root, sweep_expired
from postprocess.storage import LocalStorage, MemoryStorage


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_scratch_of_stopped_processes_is_removed_and_live_scratch_kept(tmp_path: Path) -> None:
    host = socket.gethostname().replace("-", "_")
    neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = tmp_path / f"orch-{host}-{_dead_pid()}"
        live = tmp_path / f"orch-{host}-{neighbour.pid}"
        other_host = tmp_path / f"orch-elsewhere-{_dead_pid()}"
        legacy = tmp_path / "0b7e-job-attempt"
        previous_self = tmp_path / f"orch-{host}-{os.getpid()}"  # a container restarted as the same pid
        for folder in (dead, live, other_host, legacy, previous_self):
            (folder / "job").mkdir(parents=True)
            (folder / "job" / "frames.rgb").write_bytes(bytes(1024))
        mine = claim_scratch_root(tmp_path)
    finally:
        neighbour.kill()
        neighbour.wait()
    assert mine == previous_self and list(mine.iterdir()) == []
    assert not dead.exists() and not legacy.exists()
    assert (live / "job" / "frames.rgb").exists() and (other_host / "job").exists()


def test_expired_files_are_swept_from_both_backends(tmp_path: Path) -> None:
    local, memory = LocalStorage(tmp_path), MemoryStorage()
    for storage in (local, memory):
        for key in ("uploads/a/old.wav", "uploads/b/new.wav", "outputs/old.mp4", "other/old.bin"):
            source = tmp_path / "src"
            source.write_bytes(b"x")
            storage.put_file(key, source)
    old = time.time() - 3600
    for key in ("uploads/a/old.wav", "outputs/old.mp4", "other/old.bin"):
        os.utime(tmp_path / key, (old, old))
        memory.written_at[key] = old
    for storage in (local, memory):
        assert sweep_expired(storage, retention_s=600) == 2
        assert not storage.exists("uploads/a/old.wav") and not storage.exists("outputs/old.mp4")
        assert storage.exists("uploads/b/new.wav") and storage.exists("other/old.bin")
    assert not (tmp_path / "uploads/a").exists()
