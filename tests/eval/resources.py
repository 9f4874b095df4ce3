"""Peak resident memory of the mesh's processes while a case runs: each process named in
$LIPSYNCD_HOME/run/<name>.pid together with all its descendants (tritonserver's Python
backend stubs are children), sampled from /proc every 0.2 s."""
from __future__ import annotations

import threading
from pathlib import Path

SAMPLE_PERIOD_S = 0.2
WATCHED = ("orchestrator", "triton")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended while we looked
        fields = text.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def tree_rss_kib(root_pid: int, children: dict[int, list[int]]) -> int:
    """VmRSS of root_pid and every descendant, summed."""
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += _rss_kib(pid)
        stack.extend(children.get(pid, []))
    return total


class PeakRss:
    """Context manager: `with PeakRss(home) as peak: ...; peak.mib` -> {name: peak MiB}."""

    def __init__(self, home: Path) -> None:
        self.run_dir = home / "run"
        self.peak_kib: dict[str, int] = {name: 0 for name in WATCHED}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mib(self) -> dict[str, float]:
        return {name: kib / 1024 for name, kib in self.peak_kib.items()}

    def sample(self) -> None:
        children = _children_map()
        for name in WATCHED:
            try:
                pid = int((self.run_dir / f"{name}.pid").read_text().strip())
            except (OSError, ValueError):
                continue
            self.peak_kib[name] = max(self.peak_kib[name], tree_rss_kib(pid, children))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_PERIOD_S)
