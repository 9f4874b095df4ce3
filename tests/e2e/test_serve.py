"""`make serve` itself: a taken port is a clear error at once, and the running mesh is
ready with every stage model loaded."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import httpx
import pytest

from tests.e2e.mesh import ROOT, Mesh, start_mesh
from tests.servers import MediaServer, free_port

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
    assert answer.json()["checks"] == {"nats": True, "database": True}
    answer = httpx.get(f"{mesh.url}/readyz/stages", timeout=10)
    assert answer.status_code == 200
    body = answer.text
    for model in ("audio_features", "face_detection", "generator"):
        assert model in body


def test_every_mesh_process_has_a_pid_file(mesh: Mesh) -> None:
    for name in ("nats", "triton-1", "orchestrator-1", "gateway-1"):
        pid = int((mesh.home / "run" / f"{name}.pid").read_text())
        os.kill(pid, 0)  # raises if the process is gone


@pytest.mark.parametrize("nats_gone_first", [False, True], ids=["running-job", "nats-gone-first"])
def test_sigterm_stops_every_child_within_ten_seconds(
    tmp_path, media: MediaServer, nats_gone_first: bool  # type: ignore[no-untyped-def]
) -> None:
    """SIGTERM to `make serve` (what Ctrl-C does to its group): every process it started is
    gone within 10 s, with a job running (the orchestrator drains) or after NATS died."""
    mesh = start_mesh(tmp_path)
    try:
        pids = {path.stem: int(path.read_text()) for path in (mesh.home / "run").glob("*.pid")}
        assert {"nats", "triton-1", "orchestrator-1", "gateway-1"} <= set(pids)
        with mesh.client() as client:
            answer = client.post("/api/v1/lipsync-image", json={"formState": {
                "image": f"{media.url}/portrait_photo_a.png", "audio": f"{media.url}/speech_en_1.wav"}})
        assert answer.status_code == 200, answer.text
        _wait_stage(mesh, str(answer.json()["id"]), "render")
        if nats_gone_first:
            os.kill(pids["nats"], signal.SIGKILL)
            time.sleep(1.0)
        started = time.monotonic()
        os.killpg(mesh.process.pid, signal.SIGTERM)
        mesh.process.wait(timeout=30)
        while any(_alive(pid) for pid in pids.values()) and time.monotonic() - started < 30:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        assert not [name for name, pid in pids.items() if _alive(pid)]
        assert elapsed < 10.0, f"stopping took {elapsed:.1f} s"
    finally:
        mesh.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_stage(mesh: Mesh, job_id: str, stage: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with mesh.client() as client:
        while time.monotonic() < deadline:
            if client.get(f"/api/v1/jobs/{job_id}").json().get("stage") == stage:
                return
            time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {stage}")
