"""The gateway on S3 storage (a real moto server over HTTP): uploads stream into the bucket
as multipart uploads, signed file URLs redirect to presigned S3 GETs, a failed upload
leaves nothing behind, and a missing bucket or an unshared signing key stops the start."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.context import GatewayContext
from gateway.settings import Settings
from orchestrator.settings import OrchestratorSettings
from postprocess.storage import S3Storage, StorageUnavailable
from proto.secretkey import SecretKeyMissing
from tests.integration.conftest_gateway import TEST_PLANS, ApiAccount
from tests.s3server import MotoServer, s3_server  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[2]
MakeAccount = Callable[..., ApiAccount]


def s3_settings(server: MotoServer, bucket: str, tmp_path: Path, nats_url: str, **extra: object) -> Settings:
    values: dict[str, object] = {
        "home": tmp_path / "home", "database_url": f"sqlite:///{tmp_path / 'gateway.db'}",
        "nats_url": nats_url, "public_url": "http://gateway.test", "secret_key": "test-secret",
        "plans": TEST_PLANS, "default_plan": "test", "storage_url": f"s3://{bucket}/media",
        "AWS_ENDPOINT_URL": server.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    }
    values.update(extra)
    return Settings(**values)


@pytest.fixture
def gateway_settings(s3_server: MotoServer, tmp_path: Path, nats_url: str) -> Settings:  # noqa: F811
    return s3_settings(s3_server, s3_server.create_bucket(), tmp_path, nats_url)


@pytest.fixture
async def gateway_app(gateway_settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(gateway_settings)
    async with app.router.lifespan_context(app):
        yield app


async def test_upload_streams_into_s3_and_its_url_redirects_to_a_presigned_get(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    storage = ctx.storage
    assert isinstance(storage, S3Storage)
    account = make_account()
    payload = os.urandom(12 * 1024 * 1024 + 17)  # two 8 MiB parts, the second one short
    response = await client.post("/api/v1/uploads", files={"file": ("clip.mp4", payload, "video/mp4")},
                                 headers=account.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["url"].startswith("http://gateway.test/files/uploads/")
    head = storage.client.head_object(Bucket=storage.bucket, Key=f"media/{body['key']}")
    assert head["ContentLength"] == len(payload)
    assert head["ETag"].strip('"').endswith("-2")  # a multipart upload of two parts

    redirect = await client.get(body["url"].removeprefix("http://gateway.test"))
    assert redirect.status_code == 302
    location = redirect.headers["location"]
    assert location.startswith(storage.config.endpoint_url + f"/{storage.bucket}/media/uploads/")
    assert "X-Amz-Signature=" in location
    fetched = httpx.get(location)
    assert fetched.status_code == 200 and fetched.content == payload

    tampered = body["url"].replace("signature=", "signature=0")
    assert (await client.get(tampered.removeprefix("http://gateway.test"))).status_code == 403


async def test_signed_url_of_a_missing_object_is_404(client: httpx.AsyncClient, ctx: GatewayContext) -> None:
    signed = ctx.signer.sign("outputs/nothing-here.mp4", 3600)
    answer = await client.get(signed.url.removeprefix(ctx.settings.public_url))
    assert answer.status_code == 404 and answer.json()["error_code"] == "not_found"


async def test_oversized_upload_leaves_nothing_in_the_bucket(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    storage = ctx.storage
    assert isinstance(storage, S3Storage)
    ctx.settings.max_upload_bytes = 9 * 1024 * 1024  # past the first 8 MiB part
    response = await client.post(
        "/api/v1/uploads", files={"file": ("big.mp4", os.urandom(10 * 1024 * 1024), "video/mp4")},
        headers=make_account().headers,
    )
    assert response.status_code == 413
    assert storage.client.list_objects_v2(Bucket=storage.bucket).get("KeyCount") == 0
    assert storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", []) == []


async def test_missing_bucket_stops_the_gateway(s3_server: MotoServer, tmp_path: Path, nats_url: str) -> None:  # noqa: F811
    app = create_app(s3_settings(s3_server, "no-such-bucket", tmp_path, nats_url))
    with pytest.raises(StorageUnavailable, match="bucket 'no-such-bucket' does not exist"):
        async with app.router.lifespan_context(app):
            pass


def test_scale_out_processes_refuse_to_make_their_own_signing_key(tmp_path: Path, postgres_url: str) -> None:
    with pytest.raises(SecretKeyMissing, match="LIPSYNCD_DATABASE_URL is not SQLite"):
        Settings(home=tmp_path / "a", database_url=postgres_url).secret_key_bytes()
    with pytest.raises(SecretKeyMissing, match="LIPSYNCD_SCALE_OUT=1"):
        Settings(home=tmp_path / "b", scale_out=True).secret_key_bytes()
    with pytest.raises(SecretKeyMissing, match="LIPSYNCD_STORAGE_URL is S3"):
        OrchestratorSettings(home=tmp_path / "c", storage_url="s3://bucket/x").secret_key_bytes  # noqa: B018
    assert not (tmp_path / "a" / "secret_key").exists()
    # Given, or already shared through the file, it is used as is.
    assert Settings(home=tmp_path / "a", database_url=postgres_url, secret_key="k").secret_key_bytes() == b"k"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "secret_key").write_text("shared-key\n")
    assert Settings(home=tmp_path / "d", scale_out=True).secret_key_bytes() == b"shared-key"
    assert OrchestratorSettings(home=tmp_path / "d", scale_out=True).secret_key_bytes == b"shared-key"
    # One process alone still creates the file once, and the next one reads it.
    alone = Settings(home=tmp_path / "e").secret_key_bytes()
    assert OrchestratorSettings(home=tmp_path / "e").secret_key_bytes == alone and len(alone) == 64


@pytest.mark.parametrize("module", ["gateway", "orchestrator.main"])
def test_processes_exit_with_the_reason_when_the_key_is_not_shared(tmp_path: Path, module: str) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LIPSYNCD_", "AWS_"))}
    env.update({"LIPSYNCD_HOME": str(tmp_path), "LIPSYNCD_SCALE_OUT": "1",
                "LIPSYNCD_NATS_URL": "nats://127.0.0.1:9", "PORT": "9"})
    done = subprocess.run([sys.executable, "-m", module], cwd=tmp_path, env=env | {"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "LIPSYNCD_SECRET_KEY is not set" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "secret_key").exists()
