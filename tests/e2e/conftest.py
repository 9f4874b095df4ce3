"""One mesh (`make serve`) for the whole e2e session, with loopback media and webhooks."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.mesh import Mesh, start_mesh
from tests.media import media_dir
from tests.s3server import MotoServer
from tests.servers import MediaServer, WebhookReceiver


@dataclass(frozen=True)
class S3Mesh:
    mesh: Mesh
    server: MotoServer
    bucket: str


@pytest.fixture(scope="session")
def media() -> Iterator[MediaServer]:
    media_dir()  # the e2e jobs need real media: skipped, with one message, without it
    server = MediaServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running = start_mesh(tmp_path_factory.mktemp("lipsyncd-home"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def s3_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Mesh]:
    """A second mesh whose gateway and orchestrator keep every file in S3 (a moto server on
    loopback, bucket made beforehand). No LIPSYNCD_SECRET_KEY: S3 makes them scale-out
    processes, which only start because the supervisor shares one key file with them."""
    server = MotoServer()
    bucket = server.create_bucket()
    env = server.env() | {"LIPSYNCD_STORAGE_URL": f"s3://{bucket}/lipsyncd"}
    try:
        running = start_mesh(tmp_path_factory.mktemp("lipsyncd-s3-home"), env)
    except BaseException:
        server.close()
        raise
    yield S3Mesh(mesh=running, server=server, bucket=bucket)
    running.stop()
    server.close()
