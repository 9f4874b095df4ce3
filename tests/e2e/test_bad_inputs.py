"""Bad requests and bad media through the whole mesh: each fails clearly (HTTP status or
job `error` + `error_code`), costs nothing, and leaves the mesh ready."""
from __future__ import annotations

import io
import time
import uuid
import wave

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.e2e.mesh import Mesh
from tests.servers import MEDIA_DIR, MediaServer

pytestmark = pytest.mark.e2e

CREDITS = 1000


@pytest.fixture(scope="module")
def account(mesh: Mesh) -> dict[str, str]:
    email = f"bad-{uuid.uuid4().hex[:8]}@example.com"
    mesh.admin("create-user", email, "--password", "correct horse battery", "--api-credits", str(CREDITS),
               "--plan", "pro")
    return {"email": email, "key": mesh.admin("create-key", email, "--name", "bad inputs")}


def _balance(mesh: Mesh, email: str) -> int:
    with httpx.Client(base_url=mesh.url, timeout=30) as client:
        login = client.post("/auth/login", json={"email": email, "password": "correct horse battery"})
        assert login.status_code in (200, 303), login.text
        return int(client.get("/api/account").json()["api_credits"])


def _wav(duration_s: float, rate_hz: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate_hz)
        out.writeframes(np.zeros(int(duration_s * rate_hz), np.int16).tobytes())
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _bad_media(media: MediaServer) -> list[tuple[str, str, dict[str, str], str]]:
    """(case, endpoint, formState, expected error_code)."""
    truncated = (MEDIA_DIR / "talk_a.mp4").read_bytes()[:20_000]
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (400, 400, 3), dtype=np.uint8))
    media.extra.update({
        "page.wav": (b"<html><body>not audio</body></html>", "text/html"),
        "empty.wav": (b"", "audio/wav"),
        "truncated.mp4": (truncated, "video/mp4"),
        "noface.png": (_png(noise), "image/png"),
        "bomb.png": (_png(Image.new("L", (10_000, 10_000))), "image/png"),
        "long.wav": (_wav(601.0), "audio/wav"),
    })
    image, audio = f"{media.url}/portrait_photo_b.png", f"{media.url}/speech_en_3.wav"
    return [
        ("404 URL", "lipsync-image", {"image": image, "audio": f"{media.url}/status/404"}, "download_failed"),
        ("redirect to metadata", "lipsync-image",
         {"image": image, "audio": f"{media.url}/redirect?to=http://169.254.169.254/latest"}, "url_not_allowed"),
        ("HTML as audio", "lipsync-image", {"image": image, "audio": f"{media.url}/extra/page.wav"}, "unsupported_media"),
        ("0-byte audio", "lipsync-image", {"image": image, "audio": f"{media.url}/extra/empty.wav"}, "empty_media"),
        ("truncated MP4", "lipsync-video", {"video": f"{media.url}/extra/truncated.mp4", "audio": audio}, "unsupported_media"),
        ("audio as video", "lipsync-video", {"video": audio, "audio": audio}, "unsupported_media"),
        ("no face", "lipsync-image", {"image": f"{media.url}/extra/noface.png", "audio": audio}, "face_not_found"),
        ("100 MP PNG", "lipsync-image", {"image": f"{media.url}/extra/bomb.png", "audio": audio}, "image_too_large"),
        ("601 s audio", "lipsync-image", {"image": image, "audio": f"{media.url}/extra/long.wav"}, "audio_too_long"),
        ("one face for two", "lipsync-image-multi",
         {"image": image, "left_audio": audio, "right_audio": audio}, "two_faces_required"),
    ]


def test_bad_media_fails_each_job_clearly_and_charges_nothing(
    mesh: Mesh, media: MediaServer, account: dict[str, str]
) -> None:
    before = _balance(mesh, account["email"])
    submitted = []
    with mesh.client(account["key"]) as client:
        for case, endpoint, form, code in _bad_media(media):
            answer = client.post(f"/api/v1/{endpoint}", json={"formState": form})
            assert answer.status_code == 200, (case, answer.text)
            submitted.append((case, answer.json()["id"], code))
    for case, job_id, code in submitted:
        job = mesh.wait_job(job_id, key=account["key"], timeout_s=180)
        assert job["status"] == "failed", (case, job)
        assert job["error_code"] == code, (case, job)
        assert job["error"], case
        assert job["output"] is None
    # Credits are settled from the job events a moment after the job shows its final state.
    deadline = time.monotonic() + 30
    while _balance(mesh, account["email"]) != before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _balance(mesh, account["email"]) == before
    assert httpx.get(f"{mesh.url}/readyz", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"formState": {"audio": "https://example.com/a.wav"}}, "image"),
        ({"formState": {"image": "https://example.com/a.png", "audio": "https://example.com/a.wav",
                        "resolution": "4k"}}, "resolution"),
        ({"formState": {"image": "ftp://example.com/a.png", "audio": "https://example.com/a.wav"}}, "image"),
    ],
)
def test_invalid_request_is_rejected_naming_the_field(mesh: Mesh, account: dict[str, str],
                                                      body: dict[str, object], field: str) -> None:
    with mesh.client(account["key"]) as client:
        answer = client.post("/api/v1/lipsync-image", json=body)
    assert answer.status_code == 422
    assert field in answer.text


def test_revoked_or_missing_key_is_unauthorized(mesh: Mesh) -> None:
    with httpx.Client(base_url=mesh.url, timeout=30) as client:
        assert client.get(f"/api/v1/jobs/{uuid.uuid4()}").status_code == 401
        bad = client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers={"Authorization": "Bearer sk_nope_nope"})
        assert bad.status_code == 401 and "error" in bad.json()


def test_another_accounts_job_is_not_found(mesh: Mesh, media: MediaServer, account: dict[str, str]) -> None:
    with mesh.client() as admin:
        job_id = admin.post("/api/v1/lipsync-image", json={"formState": {
            "image": f"{media.url}/status/404", "audio": f"{media.url}/status/404"}}).json()["id"]
    with mesh.client(account["key"]) as other:
        assert other.get(f"/api/v1/jobs/{job_id}").status_code == 404


def test_exhausted_credits_answer_402(mesh: Mesh, media: MediaServer) -> None:
    email = f"poor-{uuid.uuid4().hex[:8]}@example.com"
    mesh.admin("create-user", email, "--password", "correct horse battery", "--api-credits", "0")
    key = mesh.admin("create-key", email)
    with mesh.client(key) as client:
        answer = client.post("/api/v1/lipsync-image", json={"formState": {
            "image": f"{media.url}/portrait_photo_b.png", "audio": f"{media.url}/speech_en_3.wav"}})
    assert answer.status_code == 402
    assert answer.json()["error_code"] == "insufficient_credits"
