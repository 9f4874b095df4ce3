"""A job through the whole mesh with S3 storage (a real moto server): the inputs are uploaded
through the gateway into the bucket, the orchestrator reads them from there and writes the
output there, and the job's output URL (the gateway's, redirecting to a presigned S3 GET)
gives a video that decodes."""
from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import S3Mesh
from tests.e2e.media_checks import decode_frames, inspect_mp4
from tests.servers import MEDIA_DIR

pytestmark = pytest.mark.e2e


def _upload(s3_mesh: S3Mesh, name: str, media_type: str) -> str:
    with s3_mesh.mesh.client() as client:
        answer = client.post("/api/v1/uploads", files={"file": (name, (MEDIA_DIR / name).read_bytes(), media_type)})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["url"])


def test_job_on_s3_storage_reads_uploads_from_and_writes_its_output_to_the_bucket(s3_mesh: S3Mesh) -> None:
    mesh = s3_mesh.mesh
    image = _upload(s3_mesh, "portrait_photo_a.png", "image/png")
    audio = _upload(s3_mesh, "speech_en_3.wav", "audio/wav")
    assert image.startswith(f"{mesh.url}/files/uploads/")
    with mesh.client() as client:
        answer = client.post("/api/v1/lipsync-image", json={"formState": {"image": image, "audio": audio}})
    assert answer.status_code == 200, answer.text
    job = mesh.wait_job(str(answer.json()["id"]))
    assert job["status"] == "completed", job
    output = str(job["output"])
    assert output.startswith(f"{mesh.url}/files/outputs/") and "signature=" in output

    redirect = httpx.get(output, timeout=60)
    assert redirect.status_code == 302
    assert redirect.headers["location"].startswith(f"{s3_mesh.server.endpoint_url}/{s3_mesh.bucket}/lipsyncd/outputs/")
    video = httpx.get(output, follow_redirects=True, timeout=60)
    assert video.status_code == 200
    facts = inspect_mp4(video.content)
    assert (facts.video_codec, facts.audio_codec) == ("h264", "aac")
    assert abs(facts.video_duration_s - 5.0) < 0.1
    frames = decode_frames(video.content, every=25)
    assert frames and frames[0].std() > 10  # a picture, not a blank frame

    listed = httpx.get(f"{s3_mesh.server.endpoint_url}/{s3_mesh.bucket}?list-type=2", timeout=30).text
    assert listed.count("<Key>lipsyncd/uploads/") == 2 and listed.count("<Key>lipsyncd/outputs/") == 1
    assert not (mesh.home / "storage" / "outputs").exists()  # nothing on the local disk
    assert len((mesh.home / "secret_key").read_text().strip()) == 64  # shared by the supervisor
