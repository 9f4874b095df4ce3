"""The gateway's REST API against real NATS JetStream and real SQLite / PostgreSQL."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx
import pytest
from nats.aio.client import Client

from gateway.context import GatewayContext
from proto import lipsync_pb2, topology
from proto.jobobject import iso_from_ms
from proto.sealed import unseal
from tests.integration.conftest_gateway import ApiAccount, api_balance

# Fixtures: gateway_app, client, ctx, make_account, orchestrator_nc (and nats_url).

pytestmark = pytest.mark.integration

IMAGE_BODY = {
    "formState": {
        "image_url": "https://media.example.com/face.png",
        "audio": "https://media.example.com/voice.wav",
        "prompt": "calm",
    }
}

MakeAccount = Callable[..., ApiAccount]


async def submit(
    client: httpx.AsyncClient, account: ApiAccount, body: dict | None = None, **kwargs: object
) -> httpx.Response:
    return await client.post(
        "/api/v1/lipsync-image", json=body or IMAGE_BODY, headers=account.headers, **kwargs
    )


async def test_missing_malformed_and_revoked_keys_are_401(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    account = make_account()
    missing = await client.post("/api/v1/lipsync-image", json=IMAGE_BODY)
    typo = account.api_key[:-1] + ("a" if account.api_key[-1] != "a" else "b")
    mistyped = await client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {typo}"})
    assert missing.status_code == 401 and missing.json()["error_code"] == "unauthorized"
    assert mistyped.status_code == 401 and mistyped.json()["error_code"] == "unauthorized"

    from gateway.accounts import keys

    key_id = ctx.db.run(lambda s: keys.list_keys(s, account.account_id)[0].id)
    assert ctx.db.run(lambda s: keys.revoke_key(s, account.account_id, key_id))
    revoked = await submit(client, account)
    assert revoked.status_code == 401
    assert revoked.json()["error_code"] == "unauthorized"


async def test_submission_publishes_job_request_and_reserves_minimum(
    client: httpx.AsyncClient,
    make_account: MakeAccount,
    ctx: GatewayContext,
    orchestrator_nc: Client,
) -> None:
    account = make_account(api_credits=100)
    js = orchestrator_nc.jetstream()
    durable = f"test-{uuid.uuid4().hex[:8]}"
    subscription = await js.pull_subscribe(
        topology.job_subject("lipsync-image"), durable=durable, stream=topology.JOBS_STREAM
    )
    try:
        response = await submit(
            client, account, params={"webhook": "https://hooks.example.com/done"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "processing"
        uuid.UUID(body["id"])
        request = None
        for _ in range(20):
            for message in await subscription.fetch(50, timeout=5):
                await message.ack()
                candidate = lipsync_pb2.JobRequest.FromString(message.data)
                if candidate.job_id == body["id"]:
                    request = candidate
                    assert message.headers and message.headers["Nats-Msg-Id"] == body["id"]
            if request is not None:
                break
    finally:
        # A work-queue stream allows one consumer per subject filter.
        await js.delete_consumer(topology.JOBS_STREAM, durable)
    assert request is not None
    assert request.model == "lipsync-image"
    assert dict(request.inputs) == {
        "image": "https://media.example.com/face.png",
        "audio": "https://media.example.com/voice.wav",
    }
    assert request.resolution == "480p" and request.prompt == "calm"
    assert request.webhook_url == "https://hooks.example.com/done"
    # The account's whsec_ secret travels sealed with the shared key, never in clear.
    assert request.webhook_secret == "" and b"whsec_" not in request.SerializeToString()
    assert unseal(b"test-secret", request.webhook_secret_sealed, request.job_id).startswith("whsec_")
    assert request.reserved_credits == 5 and request.account_id == account.account_id
    assert api_balance(ctx, account.account_id) == 95

    job = (await client.get(f"/api/v1/jobs/{body['id']}", headers=account.headers)).json()
    assert job["status"] == "processing" and job["output"] is None and job["error"] == ""
    assert job["seed"] == request.seed and job["formState"]["seed"] == request.seed
    assert job["formState"]["image"] == "https://media.example.com/face.png"
    assert job["model"] == "lipsync-image" and job["executionTime"] is None


async def test_another_accounts_job_is_404(
    client: httpx.AsyncClient, make_account: MakeAccount
) -> None:
    owner, stranger = make_account(), make_account()
    job_id = (await submit(client, owner)).json()["id"]
    peek = await client.get(f"/api/v1/jobs/{job_id}", headers=stranger.headers)
    cancel = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=stranger.headers)
    unknown = await client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=owner.headers)
    assert peek.status_code == 404 and peek.json()["error_code"] == "not_found"
    assert cancel.status_code == 404
    assert unknown.status_code == 404


async def test_a_job_is_read_fresh_while_processing_then_from_memory_once_finished(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    from gateway.billing.settlement import Outcome, settle

    owner, stranger = make_account(), make_account()
    job_id = (await submit(client, owner)).json()["id"]
    url = f"/api/v1/jobs/{job_id}"
    assert (await client.get(url, headers=owner.headers)).json()["status"] == "processing"
    assert ctx.finished_jobs.get(owner.account_id, job_id) is None

    outcome = Outcome(status="completed", output_key="outputs/done.mp4", execution_time_ms=900)
    assert ctx.db.run(lambda s: settle(s, ctx.prices, job_id, outcome))
    first = await client.get(url, headers=owner.headers)
    assert first.json()["status"] == "completed" and first.json()["output"]
    assert ctx.finished_jobs.get(owner.account_id, job_id) is not None
    second = await client.get(url, headers=owner.headers)
    assert second.status_code == 200 and second.json() == first.json()
    assert (await client.get(url, headers=stranger.headers)).status_code == 404


async def test_insufficient_credits_is_402_and_records_nothing(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    account = make_account(api_credits=9)
    body = {"formState": {**IMAGE_BODY["formState"], "resolution": "720p"}}  # minimum 10
    response = await submit(client, account, body)
    assert response.status_code == 402
    assert response.json()["error_code"] == "insufficient_credits"
    assert api_balance(ctx, account.account_id) == 9
    listed = (await client.get("/api/v1/jobs", headers=account.headers)).json()
    assert listed["data"] == []


async def test_idempotency_key_returns_the_same_job_and_charges_once(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    account = make_account(api_credits=100)
    headers = {**account.headers, "Idempotency-Key": "order-42"}
    first, second = await asyncio.gather(
        client.post("/api/v1/lipsync-image", json=IMAGE_BODY, headers=headers),
        client.post("/api/v1/lipsync-image", json=IMAGE_BODY, headers=headers),
    )
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert api_balance(ctx, account.account_id) == 95

    different = {"formState": {**IMAGE_BODY["formState"], "prompt": "angry"}}
    reused = await client.post("/api/v1/lipsync-image", json=different, headers=headers)
    assert reused.status_code == 409
    assert reused.json()["error_code"] == "idempotency_key_reused"


async def test_cancel_releases_credits_and_sets_the_cancel_flag(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client,
) -> None:
    account = make_account(api_credits=20)
    job_id = (await submit(client, account)).json()["id"]
    assert api_balance(ctx, account.account_id) == 15

    response = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=account.headers)
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert api_balance(ctx, account.account_id) == 20
    control = await orchestrator_nc.jetstream().key_value(topology.CONTROL_BUCKET)
    flag = (await control.get(topology.cancel_key(job_id))).value
    # The flag carries the cancel moment, which the job object shows as completed_at.
    assert response.json()["error_code"] == "canceled"
    assert iso_from_ms(int(flag)) == response.json()["completed_at"]

    again = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=account.headers)
    assert again.status_code == 409
    assert api_balance(ctx, account.account_id) == 20


async def test_live_status_from_the_bucket_is_shown_while_processing(
    client: httpx.AsyncClient, make_account: MakeAccount, orchestrator_nc: Client
) -> None:
    account = make_account()
    job_id = (await submit(client, account)).json()["id"]
    status_kv = await orchestrator_nc.jetstream().key_value(topology.STATUS_BUCKET)
    live = lipsync_pb2.JobStatus(job_id=job_id, status="processing", stage="render", progress=0.4)
    await status_kv.put(job_id, live.SerializeToString())
    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()
    assert job["status"] == "processing"
    assert job["stage"] == "render" and job["progress"] == pytest.approx(0.4)

    done = lipsync_pb2.JobStatus(
        job_id=job_id, status="failed", error="No face found in the image",
        error_code="no_face", stage="analysis",
    )
    await status_kv.put(job_id, done.SerializeToString())
    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()
    assert job["status"] == "failed" and job["error_code"] == "no_face"
    assert job["error"] == "No face found in the image"


async def test_jobs_are_listed_newest_first_with_a_cursor(
    client: httpx.AsyncClient, make_account: MakeAccount
) -> None:
    account = make_account(api_credits=100)
    ids = [(await submit(client, account)).json()["id"] for _ in range(5)]
    first = (await client.get("/api/v1/jobs?limit=3", headers=account.headers)).json()
    assert [job["id"] for job in first["data"]] == ids[::-1][:3]
    cursor = first["next_cursor"]
    second = (
        await client.get("/api/v1/jobs", params={"limit": 3, "cursor": cursor}, headers=account.headers)
    ).json()
    assert [job["id"] for job in second["data"]] == ids[::-1][3:]
    assert second["next_cursor"] is None
    canceled = (await client.get("/api/v1/jobs?status=canceled", headers=account.headers)).json()
    assert canceled["data"] == []


async def test_concurrency_and_rate_limits_answer_429(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    account = make_account(api_credits=100, plan="tight")  # 2 jobs at a time, 5 requests/min
    assert (await submit(client, account)).status_code == 200
    assert (await submit(client, account)).status_code == 200
    third = await submit(client, account)
    assert third.status_code == 429
    assert third.json()["error_code"] == "too_many_concurrent_jobs"
    assert api_balance(ctx, account.account_id) == 90  # the refused one reserved nothing
    await client.get("/api/v1/jobs", headers=account.headers)
    await client.get("/api/v1/jobs", headers=account.headers)
    limited = await client.get("/api/v1/jobs", headers=account.headers)
    assert limited.status_code == 429 and limited.json()["error_code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1


async def test_plan_caps_resolution(client: httpx.AsyncClient, make_account: MakeAccount) -> None:
    account = make_account(plan="tight")
    body = {"formState": {**IMAGE_BODY["formState"], "resolution": "720p"}}
    response = await submit(client, account, body)
    assert response.status_code == 403
    assert response.json()["field"] == "formState.resolution"


async def test_http_webhook_is_refused_unless_private_urls_are_allowed(
    client: httpx.AsyncClient, make_account: MakeAccount
) -> None:
    account = make_account()
    body = {**IMAGE_BODY, "webhook": "http://hooks.example.com/done"}
    response = await submit(client, account, body)
    assert response.status_code == 422 and response.json()["field"] == "webhook"


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    # Ready without Triton (none runs here): NATS and the database are what it needs.
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"nats": True, "database": True}
    stages = await client.get("/readyz/stages")
    assert stages.status_code == 503
    body = stages.json()
    assert body["checks"]["triton"] is False and "model generator" in body["not_ready"]
    metrics = await client.get("/metrics")
    assert "lipsyncd_gateway_http_request_duration_seconds" in metrics.text


async def test_job_that_cannot_be_published_fails_and_costs_nothing(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway import jobs
    from gateway.bus import BusUnavailableError

    async def broken_publish(request: lipsync_pb2.JobRequest) -> None:
        raise BusUnavailableError("stream unavailable")

    account = make_account(api_credits=20)
    monkeypatch.setattr(ctx.bus, "publish_job", broken_publish)
    monkeypatch.setattr(jobs, "PUBLISH_BACKOFF_S", 0.0)
    response = await submit(client, account)
    assert response.status_code == 503
    assert response.json()["error_code"] == "service_unavailable"
    assert api_balance(ctx, account.account_id) == 20
    listed = (await client.get("/api/v1/jobs", headers=account.headers)).json()["data"]
    assert [(job["status"], job["error_code"]) for job in listed] == [("failed", "internal_error")]
