"""Credits end to end: job events settle once, the reservation responder, and the credit
race (many concurrent submissions never overspend), on SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from nats.aio.client import Client
from sqlalchemy import select

from gateway.context import GatewayContext
from gateway.models import LedgerEntry
from proto import lipsync_pb2, topology
from tests.integration.conftest_gateway import ApiAccount, api_balance, wait_for_job_status

# Fixtures: gateway_app, client, ctx, make_account, orchestrator_nc (and nats_url).

pytestmark = pytest.mark.integration

MakeAccount = Callable[..., ApiAccount]
VIDEO_BODY = {
    "formState": {
        "video_url": "https://media.example.com/talk.mp4",
        "audio_url": "https://media.example.com/voice.mp3",
        "sync_mode": "loop",
    }
}


async def submit_video(client: httpx.AsyncClient, account: ApiAccount) -> str:
    response = await client.post("/api/v1/lipsync-video", json=VIDEO_BODY, headers=account.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def ledger_kinds(ctx: GatewayContext, job_id: str) -> Counter[str]:
    rows = ctx.db.run(
        lambda s: list(s.scalars(select(LedgerEntry.kind).where(LedgerEntry.job_id == job_id)))
    )
    return Counter(rows)


SECRET_KEY = b"test-secret"  # gateway_settings' key, shared with the orchestrator


async def publish_event(nc: Client, status: lipsync_pb2.JobStatus, key: bytes = SECRET_KEY,
                        dedup: bool = False) -> None:
    """The job's final event as the orchestrator sends it, signed with `key`."""
    data = lipsync_pb2.JobEvent(status=status, resolution="480p").SerializeToString()
    headers = topology.event_headers(key, status.job_id, status.status, data)
    if not dedup:
        headers.pop("Nats-Msg-Id")
    await nc.jetstream().publish(topology.event_subject(status.job_id), data, headers=headers)


async def reserve(nc: Client, job_id: str, duration_s: float) -> lipsync_pb2.ReserveReply:
    request = lipsync_pb2.ReserveRequest(job_id=job_id, output_duration_s=duration_s, resolution="480p")
    message = await nc.request(topology.BILLING_RESERVE_SUBJECT, request.SerializeToString(), timeout=5)
    return lipsync_pb2.ReserveReply.FromString(message.data)


async def test_completed_event_delivered_twice_captures_once(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client,
) -> None:
    account = make_account(api_credits=100)
    job_id = await submit_video(client, account)
    reply = await reserve(orchestrator_nc, job_id, 12.2)  # 13 s at 1 credit/s
    assert reply.ok and reply.reserved_credits == 13
    assert api_balance(ctx, account.account_id) == 87

    output_key = f"outputs/{job_id}.mp4"
    output_path = ctx.settings.storage_path / output_key
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_bytes(bytes(range(256)) * 40)
    done = lipsync_pb2.JobStatus(
        job_id=job_id, status="completed", stage="done", progress=1.0, output_key=output_key,
        execution_time_ms=4321, timings_ms={"download": 10, "render": 4000},
        output_duration_s=12.2, completed_at_ms=int(time.time() * 1000),
    )
    await publish_event(orchestrator_nc, done)
    await publish_event(orchestrator_nc, done)
    await wait_for_job_status(ctx, job_id, "completed")
    await asyncio.sleep(0.5)  # let the duplicate arrive too
    assert ledger_kinds(ctx, job_id) == Counter({"reserve": 1, "reserve_raise": 1, "capture": 1})
    assert api_balance(ctx, account.account_id) == 87

    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()
    assert job["status"] == "completed" and job["error"] == ""
    assert job["executionTime"] == 4321
    assert job["timings"] == {"download": 10, "render": 4000}
    assert job["output"].startswith(f"http://gateway.test/files/{output_key}?expires=")
    assert job["expires_at"] and job["completed_at"] and job["progress"] == 1.0

    path = job["output"].removeprefix("http://gateway.test")
    ranged = await client.get(path, headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206
    assert ranged.content == (bytes(range(256)) * 40)[100:200]
    assert ranged.headers["content-type"] == "video/mp4"
    tampered = await client.get(path.replace(output_key, "outputs/other.mp4"))
    assert tampered.status_code == 403


async def test_forged_event_is_not_settled_and_the_real_one_is(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client,
) -> None:
    """An event that does not carry the orchestrator's signature (no signature, or one made
    with another key) moves no credit and changes no job; the genuine one then settles."""
    account = make_account(api_credits=50)
    job_id = await submit_video(client, account)
    assert (await reserve(orchestrator_nc, job_id, 20.0)).reserved_credits == 20
    failed = lipsync_pb2.JobStatus(job_id=job_id, status="failed", error="forged", error_code="no_face")
    data = lipsync_pb2.JobEvent(status=failed, resolution="480p").SerializeToString()
    await orchestrator_nc.jetstream().publish(topology.event_subject(job_id), data)
    await publish_event(orchestrator_nc, failed, key=b"not-the-shared-key")
    await asyncio.sleep(2.0)  # more than the consumer needs to settle an event
    assert ledger_kinds(ctx, job_id) == Counter({"reserve": 1, "reserve_raise": 1})
    assert api_balance(ctx, account.account_id) == 30
    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()
    assert job["status"] == "processing"

    completed = lipsync_pb2.JobStatus(job_id=job_id, status="completed", stage="done",
                                      output_key=f"outputs/{job_id}.mp4", output_duration_s=20.0)
    await publish_event(orchestrator_nc, completed, dedup=True)
    await wait_for_job_status(ctx, job_id, "completed")
    assert ledger_kinds(ctx, job_id) == Counter({"reserve": 1, "reserve_raise": 1, "capture": 1})
    assert api_balance(ctx, account.account_id) == 30


async def test_failed_event_releases_the_whole_reservation(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client,
) -> None:
    account = make_account(api_credits=50)
    job_id = await submit_video(client, account)
    assert (await reserve(orchestrator_nc, job_id, 20.0)).reserved_credits == 20
    assert api_balance(ctx, account.account_id) == 30
    failed = lipsync_pb2.JobStatus(
        job_id=job_id, status="failed", error="No face found in the image", error_code="no_face"
    )
    await publish_event(orchestrator_nc, failed)
    await publish_event(orchestrator_nc, failed)
    await wait_for_job_status(ctx, job_id, "failed")
    await asyncio.sleep(0.5)
    assert api_balance(ctx, account.account_id) == 50
    assert ledger_kinds(ctx, job_id)["release"] == 1
    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()
    assert job["status"] == "failed" and job["error_code"] == "no_face"
    assert job["error"] == "No face found in the image" and job["output"] is None


async def test_completed_job_shorter_than_reserved_is_charged_its_real_price(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client,
) -> None:
    account = make_account(api_credits=100)
    job_id = await submit_video(client, account)
    assert (await reserve(orchestrator_nc, job_id, 30.0)).reserved_credits == 30
    done = lipsync_pb2.JobStatus(
        job_id=job_id, status="completed", output_key="outputs/x.mp4", output_duration_s=8.0
    )
    await publish_event(orchestrator_nc, done)
    row = await wait_for_job_status(ctx, job_id, "completed")
    assert row.charged_credits == 8
    assert api_balance(ctx, account.account_id) == 92


async def test_reservation_raise_beyond_the_balance_is_refused(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client,
) -> None:
    account = make_account(api_credits=12)
    job_id = await submit_video(client, account)
    refused = await reserve(orchestrator_nc, job_id, 60.0)
    assert not refused.ok and refused.error_code == "insufficient_credits"
    assert refused.reserved_credits == 5
    assert api_balance(ctx, account.account_id) == 7
    again = await reserve(orchestrator_nc, job_id, 12.0)
    assert again.ok and again.reserved_credits == 12
    assert api_balance(ctx, account.account_id) == 0
    unknown = await reserve(orchestrator_nc, "00000000-0000-0000-0000-000000000000", 5.0)
    assert not unknown.ok and unknown.error_code == "unknown_job"
    await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=account.headers)
    assert api_balance(ctx, account.account_id) == 12
    after_cancel = await reserve(orchestrator_nc, job_id, 6.0)
    assert not after_cancel.ok and after_cancel.error_code == "canceled"


async def test_fifty_concurrent_submissions_never_overspend(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    account = make_account(api_credits=50)  # exactly ten minimum charges of 5
    responses = await asyncio.gather(
        *(
            client.post("/api/v1/lipsync-video", json=VIDEO_BODY, headers=account.headers)
            for _ in range(50)
        )
    )
    codes = Counter(response.status_code for response in responses)
    assert codes == Counter({200: 10, 402: 40}), codes
    assert api_balance(ctx, account.account_id) == 0
    balances = ctx.db.run(
        lambda s: list(
            s.scalars(
                select(LedgerEntry.balance_after).where(LedgerEntry.account_id == account.account_id)
            )
        )
    )
    assert min(balances) >= 0 and len(balances) == 11  # one grant, ten reservations
