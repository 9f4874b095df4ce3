"""Memory of a process tree, sampled from /proc in a background thread: the process and
all its descendants (tritonserver's Python-backend stubs, the orchestrator's probe child)
summed, with the peak kept. Two measures: RSS, which counts a page shared by several
processes (the Python runtime, ONNX Runtime, the stubs' shared memory) once per process
and so over-states a tree, and PSS, which divides each shared page among its sharers, so
that PSS summed over processes is the memory they hold together."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _parent_map(proc: Path = PROC) -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(root: int, parents: dict[int, int]) -> set[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def rss_bytes(pid: int, proc: Path = PROC) -> int:
    try:
        fields = (proc / str(pid) / "statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * PAGE_BYTES


def pss_bytes(pid: int, proc: Path = PROC) -> int:
    try:
        text = (proc / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0  # the process ended while we looked, as in rss_bytes
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no Pss line in /proc/{pid}/smaps_rollup")


def tree_rss_bytes(root: int, proc: Path = PROC) -> int:
    return sum(rss_bytes(pid, proc) for pid in descendants(root, _parent_map(proc)))


TOTAL = "total"
RSS = ""
PSS = "pss:"  # prefix of the PSS peaks' names: pss:orchestrator, pss:triton, pss:total


@dataclass(frozen=True)
class MemoryPeak:
    name: str           # a tree's name, or TOTAL: the trees summed at each sample
    idle_bytes: int     # at the start of sampling
    peak_bytes: int
    peak_at_s: float    # seconds after the start of sampling
    samples: int


class TreeSampler:
    """Samples the RSS of several named process trees every `interval_s` and their PSS every
    `pss_interval_s` until stopped; keeps each tree's peaks and the peaks of their sums
    (taken at the same instant). PSS is sampled less often because the kernel walks every
    page table to answer it (~60 ms of CPU for the mesh): at the RSS rate the sampler would
    take a quarter of a core from the jobs it measures."""

    def __init__(self, roots: dict[str, int], interval_s: float = 0.2, pss_interval_s: float = 2.0) -> None:
        self._roots = roots
        self._interval_s = interval_s
        self._pss_interval_s = pss_interval_s
        self._names = [*roots, TOTAL]
        self._pss_names = [PSS + name for name in self._names]
        self._peaks = {name: (0, 0.0) for name in self._names + self._pss_names}
        self._idle = {name: 0 for name in self._names + self._pss_names}
        self._samples = {RSS: 0, PSS: 0}
        self._started_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self, with_pss: bool) -> dict[str, int]:
        parents = _parent_map()
        trees = {name: descendants(root, parents) for name, root in self._roots.items()}
        values = {name: sum(rss_bytes(pid) for pid in pids) for name, pids in trees.items()}
        values[TOTAL] = sum(values.values())
        if with_pss:
            pss = {PSS + name: sum(pss_bytes(pid) for pid in pids) for name, pids in trees.items()}
            values.update(pss)
            values[PSS + TOTAL] = sum(pss.values())
        return values

    def _loop(self) -> None:
        next_pss_s = self._pss_interval_s
        while not self._stop.is_set():
            at_s = time.perf_counter() - self._started_s
            with_pss = at_s >= next_pss_s
            if with_pss:
                next_pss_s = at_s + self._pss_interval_s
            for name, value in self._sample(with_pss).items():
                if value > self._peaks[name][0]:
                    self._peaks[name] = (value, at_s)
            self._samples[RSS] += 1
            self._samples[PSS] += with_pss
            self._stop.wait(self._interval_s)

    def __enter__(self) -> "TreeSampler":
        self._started_s = time.perf_counter()
        self._idle = self._sample(with_pss=True)
        self._peaks.update({name: (value, 0.0) for name, value in self._idle.items()})
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peaks(self) -> list[MemoryPeak]:
        return ([MemoryPeak(name, self._idle[name], *self._peaks[name], self._samples[RSS]) for name in self._names]
                + [MemoryPeak(name, self._idle[name], *self._peaks[name], self._samples[PSS])
                   for name in self._pss_names])


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
