"""`make k8s-check`, part 2: run what the chart renders. The NATS, Triton, orchestrator and
gateway containers start from their rendered command, args and env (tests/k8s/kubelet.py
says what stands in for the images, Services, volumes and Secret), every rendered probe is
probed as the kubelet would, and the rendered `helm test` pod pushes one real job through.
This is what proves the env names, ports, paths and secret keys match the code."""
from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.k8s.chart import find, profile_values, render
from tests.k8s.kubelet import Cluster, Container, container_from
from tests.servers import MEDIA_DIR, MediaServer

pytestmark = pytest.mark.integration

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PUBLIC_URL = "https://lipsync.k8s-check.example"
JOB_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    name = f"lipsyncd_k8s_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def media() -> Iterator[MediaServer]:
    if not (MEDIA_DIR / "portrait_photo_a.png").is_file():
        pytest.skip(f"test media not found in {MEDIA_DIR}")
    server = MediaServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def release(database: str, media: MediaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Cluster, dict[str, Container]]]:
    docs = render(release_values(database, media, with_media=True))
    cluster = Cluster(docs=docs, scratch=tmp_path_factory.mktemp("k8s"), namespace="lipsyncd")
    gateway_doc = find(docs, "Deployment", "-gateway")
    gateway_port = cluster.local_port("gateway", pod_port(gateway_doc, "http"))
    cluster.aliases[PUBLIC_URL] = f"http://127.0.0.1:{gateway_port}"
    containers = {
        name: container_from(cluster, find(docs, kind, f"-{name}"))
        for kind, name in (("StatefulSet", "nats"), ("Deployment", "triton"), ("Deployment", "orchestrator"),
                           ("Deployment", "gateway"))
    }
    try:
        yield cluster, containers
    finally:
        for container in reversed(list(containers.values())):
            container.stop()


def release_values(database: str, media: MediaServer, *, with_media: bool) -> dict[str, Any]:
    """The default profile as an operator would set it for this machine."""
    tests: dict[str, Any] = {"timeoutSeconds": JOB_TIMEOUT_S}
    if with_media:
        tests |= {"imageUrl": f"{media.url}/portrait_photo_a.png", "audioUrl": f"{media.url}/speech_en_3.wav"}
    return profile_values("default", {
        "config": {"publicUrl": PUBLIC_URL, "allowPrivateUrls": True},
        "secrets": {"databaseUrl": database},
        "tests": tests,
    })


def pod_port(doc: dict[str, object], name: str) -> int:
    container = doc["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    return int(next(p["containerPort"] for p in container["ports"] if p["name"] == name))


def test_the_rendered_release_runs_and_a_job_goes_through(
    release: tuple[Cluster, dict[str, Container]], database: str, media: MediaServer
) -> None:
    cluster, containers = release
    nats, triton, orchestrator, gateway = (containers[n] for n in ("nats", "triton", "orchestrator", "gateway"))
    # The pods start as a cluster would start them: each waits for its own probes only.
    for container in (nats, triton, orchestrator, gateway):
        container.start()
    for container in (nats, triton, gateway):
        container.wait_probe("startupProbe", cluster)
        container.wait_probe("readinessProbe", cluster, budget_s=60)
        container.wait_probe("livenessProbe", cluster, budget_s=10)
    assert orchestrator.alive(), orchestrator.tail()

    gateway_url = f"http://127.0.0.1:{cluster.local_port('gateway', pod_port(find(cluster.docs, 'Deployment', '-gateway'), 'http'))}"
    stages = httpx.get(f"{gateway_url}/readyz/stages", timeout=10)
    assert stages.status_code == 200, stages.text
    assert "as KIND_CPU" in triton.log.read_text()  # the models went through triton_entry.py

    # The rendered `helm test` pod: an API key from the database in the Secret, one real job.
    smoke = container_from(cluster, find(cluster.docs, "Pod", "-test-job"))
    done = subprocess.run(smoke.argv, cwd=Path(__file__).resolve().parents[2], env=smoke.env, capture_output=True,
                          text=True, timeout=JOB_TIMEOUT_S + 120, check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}\norchestrator:\n{orchestrator.tail()}"
    assert "completed" in done.stdout and "bytes of MP4" in done.stdout, done.stdout

    # The default `helm test` (no media values): a synthetic faceless picture must come back
    # failed with face_not_found, i.e. after Triton's face stage answered.
    default_pod = find(render(release_values(database, media, with_media=False)), "Pod", "-test-job")
    synthetic = container_from(cluster, default_pod)
    assert "--image-url" not in synthetic.argv
    done = subprocess.run(synthetic.argv, cwd=Path(__file__).resolve().parents[2], env=synthetic.env,
                          capture_output=True, text=True, timeout=JOB_TIMEOUT_S + 120, check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    assert "failed face_not_found" in done.stdout, done.stdout

    # The NATS password reached the clients through the URL, and no log line shows it.
    secret = next(d["metadata"]["name"] for d in cluster.docs if d["kind"] == "Secret")
    password = cluster.secret(secret, "nats-password")
    assert "job bus ready on nats://127.0.0.1:" in gateway.log.read_text()
    for container in (nats, triton, orchestrator, gateway):
        assert password not in container.log.read_text(), f"{container.name} logs the NATS password"

    # Triton gone: the gateway stays ready (polling and downloads go on), the stages say why.
    triton.stop()
    assert httpx.get(f"{gateway_url}/readyz", timeout=10).status_code == 200
    stages = httpx.get(f"{gateway_url}/readyz/stages", timeout=10)
    assert stages.status_code == 503 and "triton" in stages.json()["not_ready"]
