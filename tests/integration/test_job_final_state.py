"""A job's final state is one decision in the gateway's database: a cancel that arrives while
the orchestrator encodes or stores the output either wins (canceled, refunded, the output
deleted, no URL anywhere) or loses (completed, charged). Played with the real gateway app,
the real nats-server and the real Orchestrator class, whose pipeline is held at "encode"."""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from gateway.bus import PublishUncertainError
from gateway.context import GatewayContext
from orchestrator import main as orchestrator_main
from orchestrator.billing import NatsBilling
from orchestrator.main import Bus, Orchestrator
from orchestrator.pipeline import JobResources, JobResult
from orchestrator.settings import OrchestratorSettings
from orchestrator.status import JobReporter, read_status
from postprocess.storage import LocalStorage
from postprocess.webhooks import HttpWebhookSender, WebhookDispatcher
from proto import lipsync_pb2, topology
from tests.integration.conftest_gateway import ApiAccount, api_balance, wait_for_job_status
from tests.integration.test_gateway_billing import ledger_kinds

pytestmark = pytest.mark.integration

MakeAccount = Callable[..., ApiAccount]
IMAGE_BODY = {
    "webhook": "https://hooks.example.com/final",
    "formState": {"image": "https://media.example.com/face.png",
                  "audio": "https://media.example.com/voice.wav"},
}


class HeldEncode:
    """Stands in for run_job: reaches the encode stage, waits there until released, then
    stores a real file under the job's output key (as the pipeline's last step does)."""

    def __init__(self) -> None:
        self.at_encode = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, request: lipsync_pb2.JobRequest, reporter: JobReporter,
                       res: JobResources, scratch: Path) -> JobResult:
        await reporter.stage("encode", 0.97)
        self.at_encode.set()
        await self.release.wait()
        output = scratch / "output.mp4"
        output.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(2048))
        key = f"outputs/{request.job_id}.mp4"
        res.storage.put_file(key, output)
        return JobResult(output_key=key, duration_s=7.0, timings_ms={"encode": 1})


async def _orchestrator(nc: Client, ctx: GatewayContext, tmp_path: Path) -> Orchestrator:
    js = nc.jetstream()
    bus = Bus(js=js, status_kv=await js.key_value(topology.STATUS_BUCKET),
              control_kv=await js.key_value(topology.CONTROL_BUCKET))
    # The gateway's secret key: events are signed and webhook secrets sealed with it.
    settings = OrchestratorSettings(home=tmp_path / "orchestrator", heartbeat_s=1.0,
                                    storage_dir=ctx.settings.storage_path,
                                    secret_key=ctx.settings.secret_key)
    storage = LocalStorage(ctx.settings.storage_path)
    resources = JobResources(settings=settings, stages=None, fetcher=None,  # type: ignore[arg-type]
                             storage=storage, billing=NatsBilling(nc))
    webhooks = WebhookDispatcher(sender=HttpWebhookSender(allow_private=True),
                                 sealing_key=settings.secret_key_bytes)
    return Orchestrator(settings, bus, resources, webhooks)


async def _job_message(nc: Client, job_id: str) -> Msg:
    """This job's message from the jobs stream (other tests' leftovers are put back)."""
    subscription = await nc.jetstream().pull_subscribe(
        f"{topology.JOBS_SUBJECT_PREFIX}.>", durable=topology.ORCHESTRATOR_CONSUMER,
        stream=topology.JOBS_STREAM)
    for _ in range(50):
        for msg in await subscription.fetch(16, timeout=5):
            if lipsync_pb2.JobRequest.FromString(msg.data).job_id == job_id:
                return msg
            await msg.nak(delay=30)
    raise AssertionError(f"job {job_id} not found on the jobs stream")


async def _webhook_body(nc: Client, job_id: str) -> dict[str, object]:
    stored = await nc.jetstream().get_last_msg(topology.WEBHOOKS_STREAM, topology.webhook_subject(job_id))
    delivery = lipsync_pb2.WebhookDelivery.FromString(stored.data or b"")
    return dict(json.loads(delivery.body))


async def _submit_image(client: httpx.AsyncClient, account: ApiAccount) -> str:
    answer = await client.post("/api/v1/lipsync-image", json=IMAGE_BODY, headers=account.headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


async def test_cancel_during_encode_wins_and_leaves_no_output(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = make_account(api_credits=100)
    job_id = await _submit_image(client, account)
    held = HeldEncode()
    monkeypatch.setattr(orchestrator_main, "run_job", held)
    orchestrator = await _orchestrator(orchestrator_nc, ctx, tmp_path)
    handling = asyncio.create_task(orchestrator.handle(await _job_message(orchestrator_nc, job_id)))

    await asyncio.wait_for(held.at_encode.wait(), 10)
    live = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()
    assert live["stage"] == "encode"
    canceled = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=account.headers)
    assert canceled.status_code == 200, canceled.text
    held.release.set()  # the output is written after the cancel: it must not survive
    await asyncio.wait_for(handling, 20)

    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()
    assert job["status"] == "canceled" and job["output"] is None and job["outputs"] is None
    assert not (ctx.settings.storage_path / f"outputs/{job_id}.mp4").exists()
    status = await read_status(orchestrator.bus.status_kv, job_id)
    assert status is not None and status.status == "canceled" and status.output_key == ""
    webhook = await _webhook_body(orchestrator_nc, job_id)
    assert webhook["status"] == "canceled" and webhook["output"] is None
    assert api_balance(ctx, account.account_id) == 100
    assert ledger_kinds(ctx, job_id) == Counter({"reserve": 1, "release": 1})
    assert (await client.get("/healthz")).status_code == 200
    assert await _submit_image(client, account)  # still taking jobs


async def test_completion_recorded_first_makes_a_late_cancel_fail(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = make_account(api_credits=100)
    job_id = await _submit_image(client, account)
    held = HeldEncode()
    held.release.set()
    monkeypatch.setattr(orchestrator_main, "run_job", held)
    orchestrator = await _orchestrator(orchestrator_nc, ctx, tmp_path)
    await orchestrator.handle(await _job_message(orchestrator_nc, job_id))

    late = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=account.headers)
    assert late.status_code == 409
    row = await wait_for_job_status(ctx, job_id, "completed")
    # Charged the reservation (the minimum, never raised here), not more.
    assert row.charged_credits == 5 and api_balance(ctx, account.account_id) == 95
    assert (ctx.settings.storage_path / f"outputs/{job_id}.mp4").exists()
    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()
    assert job["status"] == "completed" and job["output"]
    webhook = await _webhook_body(orchestrator_nc, job_id)
    assert webhook["status"] == "completed" and webhook["output"]
    assert ledger_kinds(ctx, job_id) == Counter({"reserve": 1, "capture": 1})


async def test_finalize_answers_the_state_that_won(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client,
) -> None:
    account = make_account(api_credits=100)
    billing = NatsBilling(orchestrator_nc)
    first, second = await _submit_image(client, account), await _submit_image(client, account)
    assert (await client.post(f"/api/v1/jobs/{first}/cancel", headers=account.headers)).status_code == 200
    done = lipsync_pb2.JobStatus(job_id=first, status="completed", output_key=f"outputs/{first}.mp4",
                                 output_duration_s=6.0)
    assert await billing.finalize(done, "480p") == "canceled"

    done = lipsync_pb2.JobStatus(job_id=second, status="completed", output_key=f"outputs/{second}.mp4",
                                 output_duration_s=6.0)
    assert await billing.finalize(done, "480p") == "completed"
    assert await billing.finalize(done, "480p") == "completed"  # a repeat after a lost reply
    assert ledger_kinds(ctx, second) == Counter({"reserve": 1, "capture": 1})
    assert api_balance(ctx, account.account_id) == 95  # the first refunded, the second charged


async def test_timed_out_publish_keeps_the_reservation(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The publish reached JetStream but its acknowledgement was lost: the job may run, so
    it is neither failed nor refunded (the reaper settles it if it never runs)."""
    account = make_account(api_credits=100)
    publish = ctx.bus.publish_job

    async def acked_too_late(request: lipsync_pb2.JobRequest) -> None:
        await publish(request)
        raise PublishUncertainError("publish timed out")

    monkeypatch.setattr(ctx.bus, "publish_job", acked_too_late)
    answer = await client.post("/api/v1/lipsync-image", json=IMAGE_BODY, headers=account.headers)
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["id"]
    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()
    assert job["status"] == "processing"
    assert api_balance(ctx, account.account_id) == 95
    assert ledger_kinds(ctx, job_id) == Counter({"reserve": 1})
