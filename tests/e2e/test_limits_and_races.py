"""Attacks on resources and races through the whole mesh: an
8K or 240 fps video fails clearly and costs nothing; a cancel that lands in the last moments
of a job is never free (canceled: refunded, no output anywhere; or completed: charged);
the scratch directory of a killed attempt is gone once the next orchestrator starts."""
from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from tests.e2e.mesh import Mesh
from tests.e2e.test_faults import _kill, _wait_stage
from tests.servers import MediaServer, WebhookReceiver

pytestmark = pytest.mark.e2e

CREDITS = 500
PASSWORD = "correct horse battery"


def _account(mesh: Mesh, credits: int = CREDITS) -> tuple[str, str]:
    email = f"limits-{uuid.uuid4().hex[:8]}@example.com"
    mesh.admin("create-user", email, "--password", PASSWORD, "--api-credits", str(credits), "--plan", "pro")
    return email, mesh.admin("create-key", email, "--name", "limits")


def _balance(mesh: Mesh, email: str) -> int:
    with httpx.Client(base_url=mesh.url, timeout=30) as client:
        login = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code in (200, 303), login.text
        return int(client.get("/api/account").json()["api_credits"])


def _settled_balance(mesh: Mesh, email: str, expected: int, timeout_s: float = 30) -> int:
    deadline = time.monotonic() + timeout_s
    while (balance := _balance(mesh, email)) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return balance


def _mp4(width: int, height: int, fps: int, frames: int) -> bytes:
    """A short H.264 video, cheap to make even at 8K (flat frames compress to little)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for index in range(frames):
            picture = np.full((height, width, 3), index * 20 % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_oversized_or_too_fast_video_fails_clearly_and_costs_nothing(mesh: Mesh, media: MediaServer) -> None:
    email, key = _account(mesh)
    media.extra["8k.mp4"] = (_mp4(7680, 4320, 5, 5), "video/mp4")
    media.extra["240fps.mp4"] = (_mp4(160, 120, 240, 240), "video/mp4")
    audio = f"{media.url}/speech_en_3.wav"
    with mesh.client(key) as client:
        ids = [client.post("/api/v1/lipsync-video", json={"formState": {
            "video": f"{media.url}/extra/{name}", "audio": audio}}).json()["id"]
            for name in ("8k.mp4", "240fps.mp4")]
    for job_id, detail in zip(ids, ("7680x4320", "240 frames per second")):
        job = mesh.wait_job(job_id, key=key, timeout_s=180)
        assert job["status"] == "failed" and job["error_code"] == "video_too_large", job
        assert detail in str(job["error"]) and job["output"] is None
    assert _settled_balance(mesh, email, CREDITS) == CREDITS
    assert httpx.get(f"{mesh.url}/readyz", timeout=10).status_code == 200


def _cancel_when(mesh: Mesh, key: str, job_id: str, progress: float) -> int:
    """Cancel once the job is at `progress` or in the encode stage (polled every 20 ms)."""
    with mesh.client(key) as client:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            job = client.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] != "processing" or job["stage"] == "encode" or job["progress"] >= progress:
                return client.post(f"/api/v1/jobs/{job_id}/cancel").status_code
            time.sleep(0.02)
    raise AssertionError(f"job {job_id} never got to {progress}")


def test_cancel_at_the_end_is_never_free(mesh: Mesh, media: MediaServer, receiver: WebhookReceiver) -> None:
    """Cancels sent ever later in 8 s jobs, the last ones in the encode stage or after; the
    exact encode window is held open in tests/integration/test_job_final_state.py."""
    outcomes = []
    for progress in (0.5, 0.85, 0.93, 1.0):
        email, key = _account(mesh)
        with mesh.client(key) as client:
            answer = client.post("/api/v1/lipsync-image", json={
                "webhook": f"{receiver.url}/late-cancel",
                "formState": {"image": f"{media.url}/portrait_photo_b.png",
                              "audio": f"{media.url}/speech_en_1.wav"}})
        assert answer.status_code == 200, answer.text
        job_id = answer.json()["id"]
        canceled = _cancel_when(mesh, key, job_id, progress)
        job = mesh.wait_job(job_id, key=key, timeout_s=240)
        outcomes.append((progress, canceled, job["status"]))
        output_file = Path(mesh.home) / "storage" / "outputs" / f"{job_id}.mp4"
        deadline = time.monotonic() + 30
        while not receiver.for_job(job_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # a second, contradicting delivery would arrive by now
        deliveries = [d.json for d in receiver.for_job(job_id)]
        assert deliveries, "no webhook"
        if canceled == 200:
            assert job["status"] == "canceled" and job["output"] is None, job
            assert not output_file.exists()
            assert all(d["status"] == "canceled" and d["output"] is None for d in deliveries), deliveries
            assert _settled_balance(mesh, email, CREDITS) == CREDITS
        else:
            assert canceled == 409
            assert job["status"] == "completed" and job["output"], job
            assert output_file.exists()
            assert all(d["status"] == "completed" and d["output"] for d in deliveries), deliveries
            deadline = time.monotonic() + 30
            while _balance(mesh, email) == CREDITS and time.monotonic() < deadline:
                time.sleep(0.5)
            assert _balance(mesh, email) < CREDITS  # charged
    assert any(status == "canceled" for _, _, status in outcomes), outcomes
    assert httpx.get(f"{mesh.url}/readyz", timeout=10).status_code == 200


def test_scratch_of_a_killed_attempt_is_removed(mesh: Mesh, media: MediaServer) -> None:
    with mesh.client() as client:
        job_id = client.post("/api/v1/lipsync-image", json={"formState": {
            "image": f"{media.url}/portrait_photo_b.png", "audio": f"{media.url}/speech_en_1.wav"}}).json()["id"]
    _wait_stage(mesh, job_id, "render")
    scratch = Path(mesh.home) / "scratch"
    left = list(scratch.glob(f"orch-*/{job_id}-*"))
    assert left, "the running attempt has a scratch directory"
    _kill(mesh, "orchestrator")
    job = mesh.wait_job(job_id, timeout_s=300)
    assert job["status"] == "completed", job
    assert not any(path.exists() for path in left)
    assert not list(scratch.glob(f"orch-*/{job_id}-*"))  # the finished attempt cleaned up too
