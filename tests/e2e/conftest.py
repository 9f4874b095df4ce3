"""One mesh (`make serve`) for the whole e2e session, with loopback media and webhooks."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.mesh import Mesh, start_mesh
from tests.media import media_dir
from tests.servers import MediaServer, WebhookReceiver


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
