"""A real S3-speaking server for the tests: moto's standalone server (`python -m moto.server`)
as a subprocess on a free loopback port, reached over HTTP like any S3 endpoint. Each test
that needs a bucket creates its own (`create_bucket`), so tests never share objects."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from postprocess.storage import S3Config
from tests.servers import free_port

READY_TIMEOUT_S = 60.0
# moto accepts any credentials; these are what the tests hand to boto3 and to the mesh.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"moto server did not start on port {self.port}") from exc
                time.sleep(0.2)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> S3Config:
        return S3Config(endpoint_url=self.endpoint_url, region=REGION,
                        access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY)

    def env(self) -> dict[str, str]:
        """The standard variables a lipsyncd process reads to reach this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}

    def create_bucket(self) -> str:
        import boto3  # noqa: PLC0415

        name = f"lipsyncd-{uuid.uuid4().hex[:12]}"
        client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
        )
        client.create_bucket(Bucket=name)
        return name

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.close()
