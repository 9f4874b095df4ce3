"""A real tritonserver (the nvidia-pytriton wheel's 2.51 build, CPU, Python backend) on the
project's own model_repository/, one per test session, on free ports."""
from __future__ import annotations

import os
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.stages import TritonStages
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class TritonServer:
    grpc_url: str
    http_url: str
    log: Path


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as answer:  # noqa: S310
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    from deploy.docker.triton_entry import PREFIX_OPTION, remove_regions  # noqa: PLC0415
    from deploy.local.mesh import TRITON_SHM_PREFIX, triton_paths  # noqa: PLC0415

    tritonserver, backends = triton_paths()
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    log = tmp_path_factory.mktemp("triton") / "triton.log"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [sysconfig.get_config_var("LIBDIR"), env.get("LD_LIBRARY_PATH")]))
    env["LIPSYNCD_STAGE_PYTHONPATH"] = f"{sysconfig.get_paths()['purelib']}:{ROOT}"
    shm_prefix = f"{TRITON_SHM_PREFIX}{os.getpid()}_0_"  # its stubs' /dev/shm files, removed after it
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(tritonserver), f"--model-repository={ROOT / 'model_repository'}", f"--backend-directory={backends}",
             f"--grpc-port={grpc_port}", f"--http-port={http_port}", f"--metrics-port={metrics_port}",
             "--exit-timeout-secs=5", PREFIX_OPTION + shm_prefix],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    http_url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not _ready(http_url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("tritonserver did not become ready:\n" + log.read_text()[-3000:])
        time.sleep(0.5)
    try:
        yield TritonServer(grpc_url=f"127.0.0.1:{grpc_port}", http_url=http_url, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        remove_regions(shm_prefix)


@pytest.fixture
async def stages(triton: TritonServer) -> AsyncIterator[TritonStages]:
    """A gRPC client of the session's Triton (no shared memory), closed after the test."""
    client = TritonStages(triton.grpc_url)
    yield client
    await client.close()
