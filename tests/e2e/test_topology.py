"""The scale-out topology of `make serve` (2 gateways behind the round robin, 2 orchestrators,
2 Tritons, PostgreSQL, S3 storage on a real moto server over HTTP) killed piece by piece with
jobs in flight: every job still completes exactly once (one output object in the bucket, one
completed event, one webhook id, one capture in the ledger), both orchestrators work, and the
credits balance. The merged pieces run together there: NATS users with their permissions
(finalize requests, webhook attempts), signed events, sealed webhook secrets, one secret key
shared by the supervisor's key file, and the reaper on both gateways.
Marked `kill`: `make test` runs them (a few minutes on two cores)."""
from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import psycopg
import pytest

from proto import lipsync_pb2
from proto import topology as topology_names
from tests.e2e.mesh import Mesh, start_mesh
from tests.postgres import temporary_database
from tests.s3server import MotoServer
from tests.servers import MEDIA_DIR, MediaServer, WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.kill]

PORTRAITS = ("portrait_photo_a.png", "portrait_photo_b.png", "portrait_art.png", "portrait_painting.png")
TRANSIENT = (httpx.TransportError, httpx.RemoteProtocolError)


def short_wav(name: str, seconds: float) -> bytes:
    """The first `seconds` of a speech file, so that each job renders 1-2 s of video."""
    with wave.open(str(MEDIA_DIR / name)) as source:
        rate = source.getframerate()
        frames = source.readframes(int(rate * seconds))
        out = io.BytesIO()
        with wave.open(out, "wb") as target:
            target.setnchannels(source.getnchannels())
            target.setsampwidth(source.getsampwidth())
            target.setframerate(rate)
            target.writeframes(frames)
    return out.getvalue()


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with temporary_database("lipsyncd_topology") as url:
        yield url


STORAGE_PREFIX = "lipsyncd"


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[MotoServer, str]]:
    server = MotoServer()
    try:
        yield server, server.create_bucket()
    finally:
        server.close()


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, database_url: str,
             s3: tuple[MotoServer, str]) -> Iterator[Mesh]:
    server, bucket = s3
    # No LIPSYNCD_SECRET_KEY: PostgreSQL and S3 make every process a scale-out one, which
    # starts only with the key file the supervisor shares (and signs events, seals webhook
    # secrets and signs URLs with it).
    running = start_mesh(tmp_path_factory.mktemp("lipsyncd-topology"), server.env() | {
        "LIPSYNCD_GATEWAYS": "2", "LIPSYNCD_ORCHESTRATORS": "2", "LIPSYNCD_TRITONS": "2",
        "LIPSYNCD_DATABASE_URL": database_url,
        "LIPSYNCD_STORAGE_URL": f"s3://{bucket}/{STORAGE_PREFIX}",
        # Short enough that a SIGTERM mid-render hands the job back.
        "LIPSYNCD_DRAIN_GRACE_S": "1",
        # Both gateways' reapers look at every job older than 90 s every 3 s, while jobs are
        # killed, redelivered and finalized: they must spare every live one.
        "LIPSYNCD_REAPER_INTERVAL_S": "3", "LIPSYNCD_REAPER_STALE_S": "90",
    })
    yield running
    running.stop()


def _bucket_keys(s3: tuple[MotoServer, str], under: str) -> list[str]:
    """The object names under `<prefix>/<under>/` in the bucket, listed over S3's API."""
    import boto3  # noqa: PLC0415

    server, bucket = s3
    config = server.config
    client = boto3.session.Session().client(
        "s3", endpoint_url=config.endpoint_url, region_name=config.region,
        aws_access_key_id=config.access_key_id, aws_secret_access_key=config.secret_access_key)
    names: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{STORAGE_PREFIX}/{under}/"):
        names += [str(item["Key"]).removeprefix(f"{STORAGE_PREFIX}/") for item in page.get("Contents", [])]
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "multipart uploads left open"
    return sorted(names)


@pytest.fixture(scope="module")
def short_media(media: MediaServer) -> MediaServer:
    media.extra["short_1.wav"] = (short_wav("speech_en_1.wav", 1.6), "audio/wav")
    media.extra["short_2.wav"] = (short_wav("speech_en_2.wav", 2.0), "audio/wav")
    media.extra["short_3.wav"] = (short_wav("speech_en_3.wav", 1.3), "audio/wav")
    return media


def _request(mesh: Mesh, method: str, path: str, **kwargs: object) -> httpx.Response:
    """One API call through the round robin, retried while a killed gateway drops it."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with mesh.client() as client:
                answer = client.request(method, path, **kwargs)  # type: ignore[arg-type]
            if answer.status_code not in (502, 503):
                return answer
        except TRANSIENT:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return answer
        time.sleep(0.3)


def _job(mesh: Mesh, job_id: str) -> dict[str, object]:
    answer = _request(mesh, "GET", f"/api/v1/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _upload(mesh: Mesh, name: str, data: bytes, media_type: str) -> str:
    answer = _request(mesh, "POST", "/api/v1/uploads", files={"file": (name, data, media_type)})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["url"])


def _submit_mixed(mesh: Mesh, media: MediaServer, receiver: WebhookReceiver, count: int,
                  uploaded: tuple[str, str] | None = None) -> list[str]:
    """`count` jobs, 2 image : 1 video; with `uploaded` (image URL, audio URL), every fourth
    job takes its inputs from those uploads (read back from the storage, not fetched)."""
    ids = []
    for i in range(count):
        audio = f"{media.url}/extra/short_{i % 3 + 1}.wav"
        if i % 3 == 2:
            path = "/api/v1/lipsync-video"
            form = {"video": f"{media.url}/{'talk_a.mp4' if i % 2 else 'talk_b.mp4'}", "audio": audio}
        elif uploaded is not None and i % 4 == 0:
            path = "/api/v1/lipsync-image"
            form = {"image": uploaded[0], "audio": uploaded[1]}
        else:
            path = "/api/v1/lipsync-image"
            form = {"image": f"{media.url}/{PORTRAITS[i % len(PORTRAITS)]}", "audio": audio}
        answer = _request(mesh, "POST", path, json={"formState": form, "webhook": f"{receiver.url}/topology"})
        assert answer.status_code == 200, answer.text
        ids.append(str(answer.json()["id"]))
    return ids


def _pid(mesh: Mesh, name: str) -> int:
    return int((mesh.home / "run" / f"{name}.pid").read_text())


def _log(mesh: Mesh, name: str) -> str:
    return (mesh.home / "logs" / f"{name}.log").read_text(errors="replace")


def _runner(mesh: Mesh, job_id: str) -> str | None:
    """The orchestrator whose log shows it started the job last."""
    latest: tuple[str, str] | None = None
    for name in ("orchestrator-1", "orchestrator-2"):
        for match in re.finditer(rf"^(\S+ \S+) INFO orchestrator: job {job_id} .* attempt", _log(mesh, name), re.M):
            if latest is None or match.group(1) > latest[0]:
                latest = (match.group(1), name)
    return latest[1] if latest else None


def _wait_rendering(mesh: Mesh, ids: list[str], exclude: set[str], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for job_id in ids:
            if job_id not in exclude and _job(mesh, job_id).get("stage") == "render":
                return job_id
        time.sleep(0.1)
    raise AssertionError("no job reached the render stage")


def _wait_all(mesh: Mesh, ids: list[str], timeout_s: float = 360) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    jobs: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline:
        jobs = {job_id: _job(mesh, job_id) for job_id in ids}
        if all(job["status"] != "processing" for job in jobs.values()):
            return jobs
        time.sleep(1.0)
    raise AssertionError(f"jobs still processing: {[i for i, j in jobs.items() if j['status'] == 'processing']}")


def _event_counts(mesh: Mesh) -> dict[str, int]:
    """Messages per subject in the events stream."""
    async def read() -> dict[str, int]:
        nc = await nats.connect(mesh.nats_url, **mesh.nats_auth("orchestrator"))
        try:
            info = await nc.jetstream().stream_info("LIPSYNCD_EVENTS", subjects_filter=">")
            return dict(info.state.subjects or {})
        finally:
            await nc.close()
    return asyncio.run(read())


def _ledger(database_url: str) -> tuple[dict[str, list[tuple[str, int, int]]], int, int]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT job_id, kind, credits, delta FROM ledger WHERE job_id IS NOT NULL").fetchall()
        charged = db.execute("SELECT COALESCE(SUM(charged_credits), 0) FROM jobs WHERE credit_kind = 'api'").fetchone()
        grants = db.execute("SELECT COALESCE(SUM(delta), 0) FROM ledger WHERE kind = 'grant' AND credit_kind = 'api'").fetchone()
        balance = db.execute("SELECT api_credits FROM accounts WHERE email = 'admin@localhost'").fetchone()
    entries: dict[str, list[tuple[str, int, int]]] = {}
    for job_id, kind, credits, delta in rows:
        entries.setdefault(job_id, []).append((kind, credits, delta))
    assert charged is not None and grants is not None and balance is not None
    return entries, int(grants[0]) - int(charged[0]), int(balance[0])


def _webhook_attempts(database_url: str, ids: list[str], timeout_s: float = 30) -> dict[str, list[tuple[str, str]]]:
    """(webhook id, outcome) of each job's stored delivery attempts, once every job has one."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    deadline = time.monotonic() + timeout_s
    while True:
        with psycopg.connect(url) as db:
            rows = db.execute("SELECT job_id, webhook_id, outcome FROM webhook_attempts WHERE job_id = ANY(%s)",
                              (ids,)).fetchall()
        found: dict[str, list[tuple[str, str]]] = {}
        for job_id, webhook_id, outcome in rows:
            found.setdefault(job_id, []).append((webhook_id, outcome))
        if set(found) == set(ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_each_process_has_its_pid_file_and_internal_ports_are_loopback(topology: Mesh) -> None:
    for name in ("nats", "proxy", "triton-1", "triton-2", "orchestrator-1", "orchestrator-2",
                 "gateway-1", "gateway-2"):
        os.kill(_pid(topology, name), 0)  # raises if the process is gone
    listening = _listening_addresses()
    internal = 0
    for name in ("triton-1", "triton-2", "gateway-1", "gateway-2", "nats"):
        for port in _ports_of(_pid(topology, name)):
            assert listening[port] == {"127.0.0.1"}, (name, port, listening[port])
            internal += 1
    assert internal >= 3 * 2 + 2 + 1  # grpc, http, metrics per Triton; each gateway; nats
    assert _ports_of(_pid(topology, "proxy")) == {int(topology.env["PORT"])}
    # The one secret key every process uses is the file the supervisor made before them.
    assert not topology.env.get("LIPSYNCD_SECRET_KEY")
    assert len((topology.home / "secret_key").read_text().strip()) == 64


def test_kills_mid_job_every_job_completes_exactly_once(
    topology: Mesh, short_media: MediaServer, receiver: WebhookReceiver, database_url: str,
    s3: tuple[MotoServer, str],
) -> None:
    uploaded = (_upload(topology, "portrait.png", (MEDIA_DIR / "portrait_photo_a.png").read_bytes(), "image/png"),
                _upload(topology, "speech.wav", short_wav("speech_en_3.wav", 1.5), "audio/wav"))
    ids = _submit_mixed(topology, short_media, receiver, 12, uploaded)
    victims: set[str] = set()

    # kill -9 the orchestrator that is rendering a job
    job = _wait_rendering(topology, ids, victims)
    runner = _runner(topology, job) or "orchestrator-1"
    os.kill(_pid(topology, runner), signal.SIGKILL)
    victims.add(job)
    other = "orchestrator-2" if runner == "orchestrator-1" else "orchestrator-1"

    # kill -9 a Triton while a job renders
    job = _wait_rendering(topology, ids, victims)
    os.kill(_pid(topology, "triton-1"), signal.SIGKILL)
    victims.add(job)

    # kill -9 a gateway (the round robin sends its share to the other)
    os.kill(_pid(topology, "gateway-1"), signal.SIGKILL)

    # SIGTERM the other orchestrator while it renders: it drains and hands the job back
    deadline = time.monotonic() + 120
    drained = None
    while drained is None and time.monotonic() < deadline:
        job = _wait_rendering(topology, ids, victims)
        if _runner(topology, job) == other:
            drained = job
    assert drained is not None, "the other orchestrator never rendered a job"
    os.kill(_pid(topology, other), signal.SIGTERM)

    jobs = _wait_all(topology, ids)
    assert {job_id: job["status"] for job_id, job in jobs.items()} == {job_id: "completed" for job_id in ids}

    # One output object per job in the bucket, nothing else there but the two uploads, and
    # nothing on the local disk; each output URL (a gateway's) redirects to a presigned GET.
    assert _bucket_keys(s3, "outputs") == sorted(f"outputs/{job_id}.mp4" for job_id in ids)
    assert len(_bucket_keys(s3, "uploads")) == 2
    assert not (topology.home / "storage" / "outputs").exists()
    for job_id in ids:
        with httpx.Client(timeout=30, follow_redirects=True) as client:
            for _ in range(20):
                try:
                    video = client.get(str(jobs[job_id]["output"]))
                    break
                except TRANSIENT:
                    time.sleep(0.5)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        assert video.url.host == "127.0.0.1" and video.url.port == s3[0].port  # served by S3

    # One completed event per job.
    counts = _event_counts(topology)
    assert {job_id: counts.get(f"lipsyncd.events.{job_id}", 0) for job_id in ids} == dict.fromkeys(ids, 1)

    # One webhook id per job at the receiver, every delivery saying completed.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(receiver.for_job(job_id) for job_id in ids):
        time.sleep(0.5)
    for job_id in ids:
        deliveries = receiver.for_job(job_id)
        assert deliveries, job_id
        assert len({d.headers["webhook-id"] for d in deliveries}) == 1, job_id
        assert all(d.json["status"] == "completed" for d in deliveries)

    # The orchestrators' delivery reports (webhook attempts stream, orchestrator user) were
    # consumed by a gateway (gateway user) into the dashboard's table: the same webhook id.
    attempts = _webhook_attempts(database_url, ids)
    for job_id in ids:
        webhook_ids = {d.headers["webhook-id"] for d in receiver.for_job(job_id)}
        assert {webhook_id for webhook_id, _ in attempts.get(job_id, [])} == webhook_ids, job_id
        assert "delivered" in {outcome for _, outcome in attempts[job_id]}, job_id

    # One capture per job, and the credits balance exactly.
    entries, expected_balance, balance = _ledger(database_url)
    for job_id in ids:
        kinds = [kind for kind, _, _ in entries[job_id]]
        assert kinds.count("capture") == 1, (job_id, kinds)
        captured = next(credits for kind, credits, _ in entries[job_id] if kind == "capture")
        assert captured > 0
        assert -sum(delta for _, _, delta in entries[job_id]) == captured, (job_id, entries[job_id])
    assert balance == expected_balance

    # Nothing was refused on the way: no event failed its signature, no sealed secret failed
    # to open, no reaper settled a live job, NATS saw no permission violation.
    gateway_logs = _log(topology, "gateway-1") + _log(topology, "gateway-2")
    orchestrator_logs = _log(topology, "orchestrator-1") + _log(topology, "orchestrator-2")
    assert "signature does not verify" not in gateway_logs
    for job_id in ids:  # the final state was decided by a gateway, asked over NATS
        assert f"job {job_id} finalize as completed: recorded" in gateway_logs, job_id
    assert "reaped job" not in gateway_logs
    assert "reaping stale jobs failed" not in gateway_logs and "reaper paused" not in gateway_logs
    assert "sealed secret does not open" not in orchestrator_logs
    assert "Violation" not in _log(topology, "nats")

    # Both orchestrators did work; the SIGTERM'd one drained: its job finished within the
    # grace or was handed back (test_drain_hands_a_long_job_back_without_counting_it).
    for name in ("orchestrator-1", "orchestrator-2"):
        assert "completed in" in _log(topology, name), name
    drained_log = _log(topology, other)
    assert "draining: 1 running job(s)" in drained_log
    after = drained_log.split("draining: 1 running job(s)", 1)[1]
    assert f"job {drained} handed back unfinished" in after or f"job {drained} completed in" in after


def test_drain_hands_a_long_job_back_without_counting_it(
    topology: Mesh, media: MediaServer, receiver: WebhookReceiver, database_url: str
) -> None:
    """SIGTERM to the orchestrator rendering a job that needs far more than the drain grace
    (1 s here): the job is handed back, resumes on a worker as attempt 1 again, and
    completes once."""
    answer = _request(topology, "POST", "/api/v1/lipsync-image", json={
        "formState": {"image": f"{media.url}/portrait_photo_b.png", "audio": f"{media.url}/speech_en_1.wav"},
        "webhook": f"{receiver.url}/drain"})
    assert answer.status_code == 200, answer.text
    job_id = str(answer.json()["id"])
    _wait_rendering(topology, [job_id], set())
    runner = _runner(topology, job_id)
    assert runner is not None
    os.kill(_pid(topology, runner), signal.SIGTERM)
    job = _wait_all(topology, [job_id])[job_id]
    assert job["status"] == "completed", job
    assert f"job {job_id} handed back unfinished" in _log(topology, runner)
    logs = _log(topology, "orchestrator-1") + _log(topology, "orchestrator-2")
    assert re.findall(rf"job {job_id} \(\S+\) attempt (\d+)", logs) == ["1", "1"]
    entries, expected_balance, balance = _ledger(database_url)
    assert [kind for kind, _, _ in entries[job_id]].count("capture") == 1
    assert balance == expected_balance


def test_jobs_queued_across_a_nats_restart_all_complete(
    topology: Mesh, short_media: MediaServer, receiver: WebhookReceiver
) -> None:
    ids = _submit_mixed(topology, short_media, receiver, 6)
    _wait_rendering(topology, ids, set())
    os.kill(_pid(topology, "nats"), signal.SIGKILL)
    jobs = _wait_all(topology, ids)
    assert all(job["status"] == "completed" for job in jobs.values()), jobs
    counts = _event_counts(topology)
    assert all(counts.get(f"lipsyncd.events.{job_id}") == 1 for job_id in ids), counts


def _listening_addresses() -> dict[int, set[str]]:
    """Local TCP ports in LISTEN state and the addresses they are bound to (IPv4 and IPv6)."""
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":
                continue
            address, port = fields[1].split(":")
            found.setdefault(int(port, 16), set()).add(_address(address))
    return found


def _address(hex_address: str) -> str:
    if hex_address.startswith("0000000000000000FFFF0000"):  # IPv4-mapped IPv6
        hex_address = hex_address[-8:]
    if len(hex_address) == 8:
        return ".".join(str(int(hex_address[i:i + 2], 16)) for i in (6, 4, 2, 0))
    if hex_address == "0" * 32:
        return "::"
    if hex_address == "00000000000000000000000001000000":
        return "::1"
    return hex_address


def _ports_of(pid: int) -> set[int]:
    """The listening TCP ports whose sockets the process (or its group) holds."""
    inodes: set[str] = set()
    pids = [pid] + [int(p) for p in os.listdir("/proc") if p.isdigit() and _group_of(int(p)) == pid]
    for each in pids:
        with_fds = Path(f"/proc/{each}/fd")
        try:
            for fd in with_fds.iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].split(":")[1], 16))
    return ports


def _group_of(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def test_nats_users_may_publish_only_their_own_subjects(
    topology: Mesh, short_media: MediaServer, receiver: WebhookReceiver
) -> None:
    """Without a user NATS refuses the connection; the gateway's user cannot publish a job
    event (a forged "completed" one is not even stored), the orchestrator's cannot publish
    a job or a cancel flag; the real job is then settled once, as usual."""
    [job_id] = _submit_mixed(topology, short_media, receiver, 1)
    forged_status = lipsync_pb2.JobStatus(job_id=job_id, status="completed", stage="done",
                                          output_key=f"outputs/{job_id}.mp4", output_duration_s=0.1)
    forged = lipsync_pb2.JobEvent(status=forged_status, resolution="480p").SerializeToString()

    async def attack() -> list[str]:
        refused = []
        try:
            await nats.connect(topology.nats_url, allow_reconnect=False, connect_timeout=2)
        except (nats.errors.Error, OSError) as exc:
            refused.append(f"anonymous: {exc!r}")
        for user, subject, data in (
            ("gateway", topology_names.event_subject(job_id), forged),
            ("orchestrator", topology_names.job_subject("lipsync-image"), b"x"),
            ("orchestrator", f"$KV.{topology_names.CONTROL_BUCKET}.{topology_names.cancel_key(job_id)}", b"1"),
        ):
            nc = await nats.connect(topology.nats_url, **topology.nats_auth(user))
            try:
                await nc.jetstream(timeout=2).publish(subject, data)
            except (nats.errors.Error, TimeoutError) as exc:
                refused.append(f"{user} -> {subject}: {exc!r}")
            finally:
                await nc.close()
        return refused

    refused = asyncio.run(attack())
    assert len(refused) == 4, refused
    job = _wait_all(topology, [job_id])[job_id]
    assert job["status"] == "completed"
    assert _event_counts(topology).get(topology_names.event_subject(job_id)) == 1
    nats_log = _log(topology, "nats")
    assert f'user:gateway" - Publish Violation - Subject "{topology_names.event_subject(job_id)}"' in nats_log
