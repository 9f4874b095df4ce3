"""A cancel that really lands while the job is at stage "encode", through the whole mesh
(`make serve` with LIPSYNCD_HOLD_ENCODE_S holding that stage open for a few seconds, so the
window is certain instead of ~0.1 s): the job ends canceled and refunded, its output file is
deleted, neither GET nor the webhook carries a URL; a job not canceled in the same mesh
completes and is charged. The race itself is decided in the gateway's database; tests/integration/test_job_final_state.py holds the same window in-process."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.mesh import Mesh, start_mesh
from tests.servers import MediaServer, WebhookReceiver

pytestmark = pytest.mark.e2e

CREDITS = 500
PASSWORD = "correct horse battery"
HOLD_S = 4.0


@pytest.fixture(scope="module")
def held_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running = start_mesh(tmp_path_factory.mktemp("lipsyncd-held-home"),
                         {"LIPSYNCD_HOLD_ENCODE_S": str(HOLD_S)})
    yield running
    running.stop()


def _account(mesh: Mesh) -> tuple[str, str]:
    email = f"late-{uuid.uuid4().hex[:8]}@example.com"
    mesh.admin("create-user", email, "--password", PASSWORD, "--api-credits", str(CREDITS), "--plan", "pro")
    return email, mesh.admin("create-key", email, "--name", "late-cancel")


def _balance(mesh: Mesh, email: str) -> int:
    with httpx.Client(base_url=mesh.url, timeout=30) as client:
        client.post("/auth/login", json={"email": email, "password": PASSWORD}).raise_for_status()
        return int(client.get("/api/account").json()["api_credits"])


def _submit(mesh: Mesh, key: str, media: MediaServer, receiver: WebhookReceiver) -> str:
    with mesh.client(key) as client:
        answer = client.post("/api/v1/lipsync-image", json={
            "webhook": f"{receiver.url}/held",
            "formState": {"image": f"{media.url}/portrait_photo_b.png",
                          "audio": f"{media.url}/speech_en_1.wav"}})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def _wait_for_encode(mesh: Mesh, key: str, job_id: str) -> float:
    with mesh.client(key) as client:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            job = client.get(f"/api/v1/jobs/{job_id}").json()
            assert job["status"] == "processing", job
            if job["stage"] == "encode":
                return time.monotonic()
            time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached encode")


def _deliveries(receiver: WebhookReceiver, job_id: str) -> list[dict]:
    deadline = time.monotonic() + 30
    while not receiver.for_job(job_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # a second, contradicting delivery would arrive by now
    return [delivery.json for delivery in receiver.for_job(job_id)]


def test_a_cancel_at_stage_encode_wins_and_leaves_no_output_anywhere(
    held_mesh: Mesh, media: MediaServer, receiver: WebhookReceiver
) -> None:
    mesh = held_mesh
    email, key = _account(mesh)
    job_id = _submit(mesh, key, media, receiver)
    reached = _wait_for_encode(mesh, key, job_id)
    with mesh.client(key) as client:
        canceled = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert time.monotonic() - reached < HOLD_S, "the cancel did not land inside the held encode stage"
    assert canceled.status_code == 200, canceled.text
    job = mesh.wait_job(job_id, key=key, timeout_s=120)
    assert job["status"] == "canceled" and job["output"] is None and job["outputs"] is None, job
    deliveries = _deliveries(receiver, job_id)
    assert deliveries and all(d["status"] == "canceled" and d["output"] is None for d in deliveries), deliveries
    # The orchestrator stored the output after the hold, then learned the cancel had won.
    output_file = Path(mesh.home) / "storage" / "outputs" / f"{job_id}.mp4"
    deadline = time.monotonic() + 30
    while output_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not output_file.exists()
    assert _balance(mesh, email) == CREDITS  # refunded whole
    assert mesh.wait_job(job_id, key=key, timeout_s=5)["status"] == "canceled"  # and it stays so

    # Not canceled, the same held stage completes and is charged.
    other = _submit(mesh, key, media, receiver)
    finished = mesh.wait_job(other, key=key, timeout_s=240)
    assert finished["status"] == "completed" and finished["output"], finished
    assert (Path(mesh.home) / "storage" / "outputs" / f"{other}.mp4").exists()
    deadline = time.monotonic() + 30
    while _balance(mesh, email) == CREDITS and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _balance(mesh, email) < CREDITS
    assert httpx.get(f"{mesh.url}/readyz", timeout=10).status_code == 200
