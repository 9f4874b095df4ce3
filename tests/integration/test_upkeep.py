"""Nothing stuck forever, nothing written to a full disk: the gateway's reaper settles jobs
nobody will finish (never published, heartbeat stopped, finished without an event) and
leaves live ones alone; expired uploads and outputs are deleted by the storage sweep; a
nearly full disk gives a clear 503 (gateway) or leaves jobs queued (orchestrator). Against
the real gateway app, the real nats-server and the real Orchestrator class."""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

from gateway.billing.settlement import Outcome, settle
from gateway.context import GatewayContext
from gateway.models import Job, utcnow
from gateway.settings import Settings
from orchestrator.upkeep import sweep_expired
from postprocess.storage import LocalStorage
from proto import lipsync_pb2, topology
from proto.jobobject import ms_from_datetime
from tests.integration.conftest_gateway import ApiAccount, api_balance, wait_for_job_status
from tests.integration.test_gateway_billing import ledger_kinds
from tests.integration.test_job_final_state import _job_message, _orchestrator, _submit_image

pytestmark = pytest.mark.integration

MakeAccount = Callable[..., ApiAccount]


@pytest.fixture
def gateway_settings(gateway_settings: Settings) -> Settings:
    """A reaper that runs five times a second and gives up on silence after 1-2 s."""
    return gateway_settings.model_copy(
        update={"reaper_interval_s": 0.2, "reaper_stale_s": 1.0, "reaper_queued_s": 2.0}
    )


async def _put_status(nc: Client, status: lipsync_pb2.JobStatus) -> None:
    status_kv = await nc.jetstream().key_value(topology.STATUS_BUCKET)
    await status_kv.put(status.job_id, status.SerializeToString())


async def test_reaper_settles_dead_jobs_and_spares_live_ones(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client, monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = make_account(api_credits=100)
    publish = ctx.bus.publish_job

    async def crash_before_publish(request: lipsync_pb2.JobRequest) -> None:
        return None  # committed, never published: the gateway "crashed" in between

    monkeypatch.setattr(ctx.bus, "publish_job", crash_before_publish)
    unpublished = await _submit_image(client, account)
    monkeypatch.setattr(ctx.bus, "publish_job", publish)
    silent, beating, unannounced = [await _submit_image(client, account) for _ in range(3)]
    now_ms = int(time.time() * 1000)
    await _put_status(orchestrator_nc, lipsync_pb2.JobStatus(
        job_id=silent, status="processing", stage="render", updated_at_ms=now_ms))
    await _put_status(orchestrator_nc, lipsync_pb2.JobStatus(
        job_id=unannounced, status="failed", stage="done", error="No face found in the image",
        error_code="face_not_found", updated_at_ms=now_ms))
    assert api_balance(ctx, account.account_id) == 80

    async def heartbeat() -> None:
        while True:
            await _put_status(orchestrator_nc, lipsync_pb2.JobStatus(
                job_id=beating, status="processing", stage="render", updated_at_ms=int(time.time() * 1000)))
            await asyncio.sleep(0.2)

    beats = asyncio.create_task(heartbeat())
    try:
        unpublished_row = await wait_for_job_status(ctx, unpublished, "failed", timeout_s=15)
        silent_row = await wait_for_job_status(ctx, silent, "failed", timeout_s=15)
        unannounced_row = await wait_for_job_status(ctx, unannounced, "failed", timeout_s=15)
        await asyncio.sleep(1.5)  # several reaper rounds past the limits
        assert (await ctx.db.run_async(lambda s: s.get(Job, beating))).status == "processing"
    finally:
        beats.cancel()
    assert unpublished_row.error_code == "internal_error" and silent_row.error_code == "internal_error"
    assert unannounced_row.error_code == "face_not_found"  # settled as it had really ended
    control_kv = await orchestrator_nc.jetstream().key_value(topology.CONTROL_BUCKET)
    assert int((await control_kv.get(topology.cancel_key(silent))).value) > 0  # the reap moment, ms

    beating_row = await wait_for_job_status(ctx, beating, "failed", timeout_s=15)  # silence now
    assert beating_row.error_code == "internal_error"
    assert api_balance(ctx, account.account_id) == 100
    for job_id in (unpublished, silent, beating, unannounced):
        assert ledger_kinds(ctx, job_id) == Counter({"reserve": 1, "release": 1})
    job = (await client.get(f"/api/v1/jobs/{silent}", headers=account.headers)).json()
    assert job["status"] == "failed" and job["error_code"] == "internal_error" and job["output"] is None
    assert await _submit_image(client, account)  # still taking jobs


async def test_low_disk_answers_503_and_charges_nothing(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = make_account(api_credits=100)
    monkeypatch.setattr(ctx.settings, "min_free_disk_bytes", 2**62)  # more than any disk
    refused = await client.post("/api/v1/lipsync-image", json={"formState": {
        "image": "https://media.example.com/a.png", "audio": "https://media.example.com/a.wav"}},
        headers=account.headers)
    assert refused.status_code == 503 and refused.json()["error_code"] == "insufficient_storage"
    upload = await client.post("/api/v1/uploads", files={"file": ("a.wav", b"RIFF" + bytes(5000))},
                               headers=account.headers)
    assert upload.status_code == 503 and upload.json()["error_code"] == "insufficient_storage"
    assert not list((ctx.settings.storage_path / "uploads").glob("*/*"))
    assert api_balance(ctx, account.account_id) == 100
    assert (await client.get("/api/v1/jobs", headers=account.headers)).json()["data"] == []
    monkeypatch.setattr(ctx.settings, "min_free_disk_bytes", 0)
    assert await _submit_image(client, account)


async def test_expired_uploads_and_outputs_are_deleted(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
) -> None:
    account = make_account()
    urls = []
    for _ in range(2):
        response = await client.post("/api/v1/uploads", files={"file": ("v.wav", b"RIFF" + bytes(5000))},
                                     headers=account.headers)
        assert response.status_code == 201, response.text
        urls.append(response.json())
    root = ctx.settings.storage_path
    (root / "outputs").mkdir(parents=True, exist_ok=True)
    (root / "outputs/old.mp4").write_bytes(b"old")
    (root / "outputs/new.mp4").write_bytes(b"new")
    week_ago = time.time() - 8 * 24 * 3600
    for path in (root / urls[0]["key"], root / "outputs/old.mp4"):
        os.utime(path, (week_ago, week_ago))

    assert sweep_expired(LocalStorage(root), retention_s=7 * 24 * 3600) == 2
    expired = await client.get(urls[0]["url"].removeprefix("http://gateway.test"))
    assert expired.status_code == 404
    assert not (root / urls[0]["key"]).parent.exists()  # its folder went too
    kept = await client.get(urls[1]["url"].removeprefix("http://gateway.test"))
    assert kept.status_code == 200
    assert sorted(p.name for p in (root / "outputs").iterdir()) == ["new.mp4"]


async def test_a_swept_output_is_shown_expired_never_as_a_dead_link(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client,
) -> None:
    """After the sweep deletes an output (retention passed), GET, the job list and the job
    page show no link to it; a job inside its retention still gets a working signed URL."""
    account = make_account()
    retention_s = ctx.settings.file_retention_s
    now = utcnow()
    (ctx.settings.storage_path / "outputs").mkdir(parents=True, exist_ok=True)
    jobs = {}
    for name, age_s in (("old", retention_s + 3600), ("fresh", 3600)):
        job_id = await _submit_image(client, account)
        await (await _job_message(orchestrator_nc, job_id)).ack()  # no orchestrator here: take it off the queue
        key = f"outputs/{job_id}.mp4"
        path = ctx.settings.storage_path / key
        path.write_bytes(b"\x00" * 1000)
        written = time.time() - age_s - 1
        os.utime(path, (written, written))
        completed_at = now - dt.timedelta(seconds=age_s)
        outcome = Outcome(status="completed", output_key=key, completed_at_ms=ms_from_datetime(completed_at))
        assert ctx.db.run(lambda s, job_id=job_id, outcome=outcome: settle(s, ctx.prices, job_id, outcome))
        jobs[name] = (job_id, completed_at)
    assert sweep_expired(LocalStorage(ctx.settings.storage_path), retention_s=retention_s) == 1

    old_id, old_completed = jobs["old"]
    old = (await client.get(f"/api/v1/jobs/{old_id}", headers=account.headers)).json()
    assert old["status"] == "completed" and old["output"] is None and old["outputs"] is None
    expired_at = old_completed + dt.timedelta(seconds=retention_s)
    assert old["expires_at"] == expired_at.isoformat(timespec="milliseconds") + "Z"
    fresh_id, _ = jobs["fresh"]
    fresh = (await client.get(f"/api/v1/jobs/{fresh_id}", headers=account.headers)).json()
    served = await client.get(fresh["output"].removeprefix("http://gateway.test"))
    assert served.status_code == 200 and len(served.content) == 1000
    listed = (await client.get("/api/v1/jobs", headers=account.headers)).json()["data"]
    assert {job["id"]: job["output"] is None for job in listed} == {old_id: True, fresh_id: False}

    login = await client.get("/login")
    token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', login.text).group(1)
    assert (await client.post("/login", data={"email": account.email, "password": account.password,
                                              "csrf_token": token})).status_code == 303
    page = (await client.get(f"/jobs/{old_id}")).text
    assert 'id="output-expired"' in page and "/files/" not in page and "<video" not in page


async def test_orchestrator_leaves_jobs_queued_while_its_disk_is_full(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client, tmp_path: Path,
) -> None:
    account = make_account()
    job_id = await _submit_image(client, account)
    orchestrator = await _orchestrator(orchestrator_nc, ctx, tmp_path)
    orchestrator.settings.min_free_disk_bytes = 2**62
    orchestrator.settings.disk_wait_s = 0.5
    stop = asyncio.Event()
    consuming = asyncio.create_task(orchestrator.consume(stop))
    await asyncio.sleep(2.5)
    stop.set()
    await asyncio.wait_for(consuming, 10)
    message = await _job_message(orchestrator_nc, job_id)
    assert message.metadata.num_delivered == 1  # never taken (no attempt spent) meanwhile
    await message.nak()
