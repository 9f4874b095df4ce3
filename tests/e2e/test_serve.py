"""`make serve` itself: a taken port is a clear error at once, and the running mesh is
ready with every stage model loaded."""
from __future__ import annotations

import os
import socket
import subprocess

import httpx
import pytest

from tests.e2e.mesh import ROOT, Mesh
from tests.servers import free_port

pytestmark = pytest.mark.e2e


def test_taken_port_is_reported_instead_of_hanging(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(os.environ, PORT=str(free_port()), LIPSYNCD_HOME=str(tmp_path),
                   LIPSYNCD_NATS_PORT=str(port))
        done = subprocess.run(["make", "--no-print-directory", "serve"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"port {port}" in done.stderr + done.stdout
    assert "LIPSYNCD_NATS_PORT" in done.stderr + done.stdout


def test_readyz_reports_nats_triton_and_the_three_models(mesh: Mesh) -> None:
    answer = httpx.get(f"{mesh.url}/readyz", timeout=10)
    assert answer.status_code == 200
    body = answer.text
    for model in ("audio_features", "face_detection", "generator"):
        assert model in body


def test_every_mesh_process_has_a_pid_file(mesh: Mesh) -> None:
    for name in ("nats", "triton-1", "orchestrator-1", "gateway-1"):
        pid = int((mesh.home / "run" / f"{name}.pid").read_text())
        os.kill(pid, 0)  # raises if the process is gone
