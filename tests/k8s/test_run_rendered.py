"""`make k8s-check`, part 2: run what the chart renders. The NATS, Triton, orchestrator and
gateway containers start from their rendered command, args and env (tests/k8s/kubelet.py
says what stands in for the images, Services, volumes and Secret), every rendered probe is
probed as the kubelet would, and the rendered `helm test` pod pushes one real job through.
This is what proves the env names, ports, paths and secret keys match the code.

It runs twice: with the default storage (the shared volume) and with `storage.url` on a
real S3 server (moto over HTTP, tests/s3server.py), where the job's inputs and output must
be objects in the bucket and the output link a redirect to a presigned GET."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import nats
import psycopg
import pytest
from nats.errors import NoServersError

from tests.k8s.chart import deep_merge, find, pod_spec, profile_values, render
from tests.k8s.kubelet import Cluster, Container, container_from
from tests.postgres import temporary_database
from tests.s3server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer
from tests.servers import MEDIA_DIR, MediaServer

pytestmark = pytest.mark.integration

PUBLIC_URL = "https://lipsync.k8s-check.example"
JOB_TIMEOUT_S = 300
MAX_UPLOAD_MIB = 20  # small, so the body limits below are cheap to show
FORWARDED_CLIENT = "203.0.113.7"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with temporary_database("lipsyncd_k8s") as url:
        yield url


@pytest.fixture(scope="module")
def media() -> Iterator[MediaServer]:
    if not (MEDIA_DIR / "portrait_photo_a.png").is_file():
        pytest.skip(f"test media not found in {MEDIA_DIR}")
    server = MediaServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def s3() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.close()


@dataclass
class Release:
    cluster: Cluster
    containers: dict[str, Container]
    storage: str                  # "volume" or "s3"
    values: dict[str, Any]
    bucket: str = ""


@pytest.fixture(scope="module", params=["volume", "s3"])
def release(request: pytest.FixtureRequest, database: str, media: MediaServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    bucket = ""
    storage: dict[str, Any] = {}
    if request.param == "s3":
        server: MotoServer = request.getfixturevalue("s3")
        bucket = server.create_bucket()
        storage = {"storage": {"url": f"s3://{bucket}/lipsyncd",
                               "s3": {"endpointUrl": server.endpoint_url, "region": REGION}},
                   "secrets": {"s3": {"accessKeyId": ACCESS_KEY_ID, "secretAccessKey": SECRET_ACCESS_KEY}}}
    values = release_values(database, media, with_media=True, extra=storage)
    docs = render(values)
    cluster = Cluster(docs=docs, scratch=tmp_path_factory.mktemp(f"k8s-{request.param}"), namespace="lipsyncd")
    gateway_doc = find(docs, "Deployment", "-gateway")
    gateway_port = cluster.local_port("gateway", pod_port(gateway_doc, "http"))
    cluster.aliases[PUBLIC_URL] = f"http://127.0.0.1:{gateway_port}"
    containers = {
        name: container_from(cluster, find(docs, kind, f"-{name}"))
        for kind, name in (("StatefulSet", "nats"), ("StatefulSet", "triton"), ("Deployment", "orchestrator"),
                           ("Deployment", "gateway"))
    }
    try:
        yield Release(cluster, containers, request.param, values, bucket)
    finally:
        for container in reversed(list(containers.values())):
            container.stop()


def release_values(database: str, media: MediaServer, *, with_media: bool,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The default profile as an operator would set it for this machine: the gateway behind
    a proxy on loopback (trusted), a small upload cap."""
    tests: dict[str, Any] = {"timeoutSeconds": JOB_TIMEOUT_S}
    if with_media:
        tests |= {"imageUrl": f"{media.url}/portrait_photo_a.png", "audioUrl": f"{media.url}/speech_en_3.wav"}
    return profile_values("default", deep_merge({
        "config": {"publicUrl": PUBLIC_URL, "allowPrivateUrls": True, "maxUploadMiB": MAX_UPLOAD_MIB,
                   "trustedProxies": ["127.0.0.1/32"]},
        "secrets": {"databaseUrl": database},
        "tests": tests,
    }, extra or {}))


def pod_port(doc: dict[str, object], name: str) -> int:
    container = doc["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    return int(next(p["containerPort"] for p in container["ports"] if p["name"] == name))


def test_the_rendered_release_runs_and_a_job_goes_through(release: Release, database: str, media: MediaServer) -> None:
    cluster, containers = release.cluster, release.containers
    nats_server, triton, orchestrator, gateway = (containers[n] for n in ("nats", "triton", "orchestrator", "gateway"))
    # The pods start as a cluster would start them: each waits for its own probes only.
    for container in (nats_server, triton, orchestrator, gateway):
        container.start()
    for container in (nats_server, triton, gateway):
        container.wait_probe("startupProbe", cluster)
        container.wait_probe("readinessProbe", cluster, budget_s=60)
        container.wait_probe("livenessProbe", cluster, budget_s=10)
    assert orchestrator.alive(), orchestrator.tail()

    gateway_port = cluster.local_port("gateway", pod_port(find(cluster.docs, "Deployment", "-gateway"), "http"))
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    stages = httpx.get(f"{gateway_url}/readyz/stages", timeout=10)
    assert stages.status_code == 200, stages.text
    assert "as KIND_CPU" in triton.log.read_text()  # the models went through triton_entry.py
    # The orchestrator reached Triton by the StatefulSet pod's stable name.
    assert orchestrator.env["LIPSYNCD_TRITON_URLS"] == f"127.0.0.1:{cluster.local_port('triton', 8001)}"

    # The rendered `helm test` pod: an API key from the database in the Secret, one real job.
    smoke = container_from(cluster, find(cluster.docs, "Pod", "-test-job"))
    assert "LIPSYNCD_NATS_PASSWORD" not in smoke.env  # the test pod is no NATS user
    done = subprocess.run(smoke.argv, cwd=Path(__file__).resolve().parents[2], env=smoke.env, capture_output=True,
                          text=True, timeout=JOB_TIMEOUT_S + 120, check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}\norchestrator:\n{orchestrator.tail()}"
    assert "completed" in done.stdout and "bytes of MP4" in done.stdout, done.stdout
    if release.storage == "s3":
        # The output link answered 302 to the S3 endpoint, the job's objects are in the bucket,
        # and no shared volume was rendered at all.
        assert "via 302 to 127.0.0.1" in done.stdout, done.stdout
        keys = bucket_keys(release)
        assert any(k.startswith("lipsyncd/outputs/") and k.endswith(".mp4") for k in keys), keys
        assert not [d for d in cluster.docs if d["kind"] == "PersistentVolumeClaim"]
        assert "LIPSYNCD_STORAGE_DIR" not in gateway.env and gateway.env["AWS_ACCESS_KEY_ID"] == ACCESS_KEY_ID
    else:
        outputs = list(cluster.scratch.glob("pvc-*/outputs/**/*.mp4"))
        assert outputs, sorted(str(p) for p in cluster.scratch.glob("pvc-*/**/*"))

    # The default `helm test` (no media values): a synthetic faceless picture, uploaded
    # through the gateway into the release's storage, must come back failed with
    # face_not_found, i.e. after Triton's face stage answered.
    same_storage = {key: release.values[key] for key in ("storage", "secrets") if key in release.values}
    default_pod = find(render(release_values(database, media, with_media=False, extra=same_storage)), "Pod", "-test-job")
    synthetic = container_from(cluster, default_pod)
    assert "--image-url" not in synthetic.argv
    done = subprocess.run(synthetic.argv, cwd=Path(__file__).resolve().parents[2], env=synthetic.env,
                          capture_output=True, text=True, timeout=JOB_TIMEOUT_S + 120, check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    assert "failed face_not_found" in done.stdout, done.stdout
    if release.storage == "s3":
        assert [k for k in bucket_keys(release) if k.startswith("lipsyncd/uploads/")], bucket_keys(release)

    # NATS: one user per component with the permissions of proto/topology.py, from the
    # Secret; anonymous clients are refused, and no log line shows a password.
    secret = next(d["metadata"]["name"] for d in cluster.docs if d["kind"] == "Secret")
    nats_url = gateway.env["LIPSYNCD_NATS_URL"]
    assert gateway.env["LIPSYNCD_NATS_USER"] == "gateway" and orchestrator.env["LIPSYNCD_NATS_USER"] == "orchestrator"
    assert asyncio.run(nats_refuses_anonymous(nats_url))
    forged = asyncio.run(publish_as(nats_url, gateway.env["LIPSYNCD_NATS_USER"], gateway.env["LIPSYNCD_NATS_PASSWORD"],
                                    "lipsyncd.events.forged"))
    assert "permissions violation" in forged.lower(), forged  # only the orchestrator publishes events
    for component in ("gateway", "orchestrator"):
        password = cluster.secret(secret, f"nats-{component}-password")
        for container in (nats_server, triton, orchestrator, gateway):
            assert password not in container.log.read_text(), f"{container.name} logs a NATS password"

    # Behind the ingress controller (config.trustedProxies): the forwarded client address is
    # the one login throttling counts.
    answer = httpx.post(f"{gateway_url}/auth/login", json={"email": "nobody@k8s-check.invalid", "password": "wrong"},
                        headers={"X-Forwarded-For": FORWARDED_CLIENT}, timeout=30)
    assert answer.status_code == 401, answer.text
    with psycopg.connect(database.replace("+psycopg", "")) as db:
        keys = {row[0] for row in db.execute("SELECT key FROM login_failures")}
    assert f"ip:{FORWARDED_CLIENT}" in keys, keys

    # The dashboard's playground takes three files of config.maxUploadMiB; other forms do not,
    # and the Ingress lets through what the gateway takes.
    cap = MAX_UPLOAD_MIB * 1024 * 1024
    assert declared_body_status(gateway_port, "/playground", cap + 1) != 413
    assert declared_body_status(gateway_port, "/playground", 3 * cap + 64 * 1024 + 1) == 413
    assert declared_body_status(gateway_port, "/keys", cap) == 413
    ingress = find(render(deep_merge(release.values, {"ingress": {"enabled": True}})), "Ingress", "-gateway")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == f"{3 * MAX_UPLOAD_MIB + 1}m"
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/"
    assert httpx.get(f"{gateway_url}/", timeout=10).status_code in (200, 303, 307)  # the dashboard's front door

    if release.storage == "volume":
        # Triton gone: the gateway stays ready (polling and downloads go on), the stages say why.
        triton.stop()
        assert httpx.get(f"{gateway_url}/readyz", timeout=10).status_code == 200
        stages = httpx.get(f"{gateway_url}/readyz/stages", timeout=10)
        assert stages.status_code == 503 and "triton" in stages.json()["not_ready"]

    # SIGTERM: the orchestrator drains and exits within the pod's grace period by itself.
    grace = pod_spec(find(cluster.docs, "Deployment", "-orchestrator"))["terminationGracePeriodSeconds"]
    assert grace == int(orchestrator.env["LIPSYNCD_DRAIN_GRACE_S"]) + 30
    assert orchestrator.process is not None
    started = time.monotonic()
    os.killpg(orchestrator.process.pid, signal.SIGTERM)
    orchestrator.process.wait(timeout=grace)
    assert time.monotonic() - started < grace and orchestrator.process.returncode == 0, orchestrator.tail()


def bucket_keys(release: Release) -> list[str]:
    env = release.containers["gateway"].env
    client = boto3.session.Session().client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=REGION,
                                            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY)
    listing = client.list_objects_v2(Bucket=release.bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


async def nats_refuses_anonymous(url: str) -> bool:
    try:
        client = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5)
    except (NoServersError, nats.errors.Error, OSError):
        return True
    await client.close()
    return False


async def publish_as(url: str, user: str, password: str, subject: str) -> str:
    """Publishes one message as `user`; returns the server's error for it ("" when none)."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    client = await nats.connect(url, user=user, password=password, error_cb=on_error, allow_reconnect=False)
    try:
        await client.publish(subject, b"{}")
        await client.flush(timeout=5)
        await asyncio.sleep(0.5)
    finally:
        await client.close()
    return " ".join(errors)


def declared_body_status(port: int, path: str, length: int) -> int:
    """The status a POST declaring `length` body bytes gets before it sends any of them."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     f"Content-Length: {length}\r\n\r\n".encode())
        head = conn.recv(4096).decode("latin-1")
    return int(head.split(" ", 2)[1])
