"""Faults in the running mesh: an orchestrator killed mid-job, Triton restarted mid-job,
nats-server restarted with a job queued, webhook receivers that fail or hang. No job is
lost, none is done twice, and a webhook keeps its id across retries."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from deploy.docker.triton_entry import SHM_DIR
from deploy.local.mesh import TRITON_SHM_PREFIX
from tests.e2e.mesh import Mesh
from tests.servers import MediaServer, WebhookReceiver

pytestmark = pytest.mark.e2e


def _submit(mesh: Mesh, media: MediaServer, audio: str = "speech_en_1.wav", webhook: str | None = None) -> str:
    body: dict[str, object] = {"formState": {"image": f"{media.url}/portrait_photo_b.png",
                                             "audio": f"{media.url}/{audio}"}}
    if webhook:
        body["webhook"] = webhook
    with mesh.client() as client:
        answer = client.post("/api/v1/lipsync-image", json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def _wait_stage(mesh: Mesh, job_id: str, stage: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with mesh.client() as client:
        while time.monotonic() < deadline:
            job = client.get(f"/api/v1/jobs/{job_id}").json()
            if job.get("stage") == stage or job["status"] != "processing":
                return
            time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {stage}")


def _kill(mesh: Mesh, name: str) -> None:
    pid = int((mesh.home / "run" / f"{name}.pid").read_text())
    os.kill(pid, signal.SIGKILL)


def _deliveries_settle(receiver: WebhookReceiver, job_id: str, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while len(receiver.for_job(job_id)) < count and time.monotonic() < deadline:
        time.sleep(0.2)


def test_killed_orchestrator_job_is_finished_once_by_the_next_one(
    mesh: Mesh, media: MediaServer, receiver: WebhookReceiver
) -> None:
    job_id = _submit(mesh, media, webhook=f"{receiver.url}/killed")
    _wait_stage(mesh, job_id, "render")
    _kill(mesh, "orchestrator-1")
    job = mesh.wait_job(job_id, timeout_s=240)
    assert job["status"] == "completed", job
    _deliveries_settle(receiver, job_id, 1)
    time.sleep(3)
    deliveries = receiver.for_job(job_id)
    assert len({d.headers["webhook-id"] for d in deliveries}) == 1
    assert all(d.json["status"] == "completed" for d in deliveries)


def _stub_regions(mesh: Mesh, name: str) -> set[Path]:
    """The /dev/shm files of a Triton's Python-backend stubs (named after the mesh supervisor,
    the Triton's parent, and the Triton's number)."""
    pid = int((mesh.home / "run" / f"{name}.pid").read_text())
    supervisor = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return set(SHM_DIR.glob(f"{TRITON_SHM_PREFIX}{supervisor}_{name.rsplit('-', 1)[1]}_*"))


def test_job_survives_a_triton_restart_mid_render(mesh: Mesh, media: MediaServer) -> None:
    job_id = _submit(mesh, media)
    _wait_stage(mesh, job_id, "render")
    before = _stub_regions(mesh, "triton-1")
    assert before  # one per stub at least
    _kill(mesh, "triton-1")
    job = mesh.wait_job(job_id, timeout_s=300)
    assert job["status"] == "completed", job
    after = _stub_regions(mesh, "triton-1")  # the restarted server's
    assert after and not before & after  # the killed server's stubs left nothing in /dev/shm


def test_queued_job_survives_a_nats_restart(mesh: Mesh, media: MediaServer) -> None:
    running = _submit(mesh, media)
    queued = _submit(mesh, media, audio="speech_en_3.wav")
    _wait_stage(mesh, running, "render")
    _kill(mesh, "nats")
    for job_id in (running, queued):
        job = mesh.wait_job(job_id, timeout_s=300)
        assert job["status"] == "completed", job


def test_webhook_answered_500_is_delivered_later_with_the_same_id(
    mesh: Mesh, media: MediaServer, receiver: WebhookReceiver
) -> None:
    receiver.script["/flaky"] = [500, 200]
    job_id = _submit(mesh, media, audio="speech_en_3.wav", webhook=f"{receiver.url}/flaky")
    assert mesh.wait_job(job_id)["status"] == "completed"
    _deliveries_settle(receiver, job_id, 2)
    first, second = receiver.for_job(job_id)[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.at - first.at >= 0.5


def test_webhook_receiver_that_times_out_is_retried(
    mesh: Mesh, media: MediaServer, receiver: WebhookReceiver
) -> None:
    receiver.script["/slow"] = ["sleep", 200]
    job_id = _submit(mesh, media, audio="speech_en_3.wav", webhook=f"{receiver.url}/slow")
    assert mesh.wait_job(job_id)["status"] == "completed"
    _deliveries_settle(receiver, job_id, 2, timeout_s=90)
    assert len(receiver.for_job(job_id)) >= 2
