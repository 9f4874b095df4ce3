"""The webhook body and GET /api/v1/jobs/{id} are the same job object, key by key, for a
completed, a failed and a canceled job run through the whole mesh (`make serve`)."""
from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from tests.e2e.mesh import Mesh
from tests.servers import MediaServer, WebhookReceiver

pytestmark = pytest.mark.e2e


def _submit(mesh: Mesh, form: dict[str, object], webhook: str) -> str:
    with mesh.client() as client:
        answer = client.post("/api/v1/lipsync-image", json={"formState": form, "webhook": webhook})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def _webhook_body(receiver: WebhookReceiver, job_id: str, timeout_s: float = 120.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while not receiver.for_job(job_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    deliveries = receiver.for_job(job_id)
    assert deliveries, f"no webhook for job {job_id}"
    return dict(deliveries[0].json)


def _get(mesh: Mesh, job_id: str) -> dict[str, object]:
    with mesh.client() as client:
        answer = client.get(f"/api/v1/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _assert_same_job(webhook: dict[str, object], read: dict[str, object]) -> None:
    assert sorted(webhook) == sorted(read)
    if webhook["output"] != read["output"]:
        # Signed in different hours: the links may differ in their query (expiry, signature) only.
        assert urlsplit(str(webhook["output"])).path == urlsplit(str(read["output"])).path
        for body in (webhook, read):
            body.pop("output"), body.pop("outputs"), body.pop("expires_at")
    for key in webhook:
        assert webhook[key] == read[key], key


def test_completed_job(mesh: Mesh, media: MediaServer, receiver: WebhookReceiver) -> None:
    job_id = _submit(mesh, {"image": f"{media.url}/portrait_photo_a.png",
                            "audio": f"{media.url}/speech_en_3.wav", "seed": 11}, f"{receiver.url}/same")
    read = mesh.wait_job(job_id)
    assert read["status"] == "completed", read
    webhook = _webhook_body(receiver, job_id)
    assert webhook["outputs"] == [webhook["output"]] and webhook["expires_at"]
    assert webhook["formState"]["seed"] == 11  # type: ignore[index]
    _assert_same_job(webhook, _get(mesh, job_id))


def test_failed_job(mesh: Mesh, media: MediaServer, receiver: WebhookReceiver) -> None:
    job_id = _submit(mesh, {"image": f"{media.url}/status/404",
                            "audio": f"{media.url}/speech_en_3.wav"}, f"{receiver.url}/same")
    read = mesh.wait_job(job_id)
    assert read["status"] == "failed" and read["error_code"] == "download_failed", read
    _assert_same_job(_webhook_body(receiver, job_id), _get(mesh, job_id))


def test_canceled_job(mesh: Mesh, media: MediaServer, receiver: WebhookReceiver) -> None:
    job_id = _submit(mesh, {"image": f"{media.url}/portrait_photo_b.png",
                            "audio": f"{media.url}/speech_en_1.wav"}, f"{receiver.url}/same")
    deadline = time.monotonic() + 30
    while _get(mesh, job_id)["stage"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.1)  # cancel while the orchestrator works on it: a late cancel
    with mesh.client() as client:
        answer = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert answer.status_code == 200, answer.text
    webhook = _webhook_body(receiver, job_id)
    assert webhook["status"] == "canceled" and webhook["error_code"] == "canceled"
    _assert_same_job(webhook, _get(mesh, job_id))
