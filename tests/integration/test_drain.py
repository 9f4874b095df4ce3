"""Graceful drain, the branch where the running job finishes within the grace: SIGTERM's
stop event reaches the consumer while a job is held in its last stage; the job is then let go
inside the grace, so it completes on this worker (acked, charged once, no hand-back) and the
consumer returns. The hand-back branch (grace over) is played on the real topology in
tests/e2e/test_topology.py. Real gateway app, real nats-server, the real Orchestrator class
with its pipeline held at "encode" (tests/integration/test_job_final_state.py)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from gateway.context import GatewayContext
from orchestrator import main as orchestrator_main
from orchestrator.pipeline import JobResources, JobResult
from orchestrator.status import JobReporter, read_status
from proto import lipsync_pb2, topology
from tests.integration.conftest_gateway import ApiAccount, api_balance, wait_for_job_status
from tests.integration.test_gateway_billing import ledger_kinds
from tests.integration.test_job_final_state import HeldEncode, _orchestrator, _submit_image

pytestmark = pytest.mark.integration

MakeAccount = Callable[..., ApiAccount]


class HeldOne(HeldEncode):
    """Holds only the job under test at encode; a leftover job of another test that this
    consumer happens to pull goes straight through."""

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id

    async def __call__(self, request: lipsync_pb2.JobRequest, reporter: JobReporter,
                       res: JobResources, scratch: Path) -> JobResult:
        if request.job_id != self.job_id:
            other = HeldEncode()
            other.release.set()
            return await other(request, reporter, res, scratch)
        return await super().__call__(request, reporter, res, scratch)


async def _wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while text not in caplog.text:
        assert asyncio.get_running_loop().time() < deadline, f"never logged: {text}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def jobs_consumer_removed_after(orchestrator_nc: Client) -> AsyncIterator[None]:
    """The orchestrators' durable consumer this test creates is removed again: the jobs stream
    is a work queue, on which tests that read the jobs with a consumer of their own
    (test_gateway_api.py) cannot create one that overlaps it."""
    yield
    with contextlib.suppress(NotFoundError):
        await orchestrator_nc.jetstream().delete_consumer(topology.JOBS_STREAM, topology.ORCHESTRATOR_CONSUMER)


@pytest.mark.usefixtures("jobs_consumer_removed_after")
async def test_drain_lets_a_job_finishing_within_the_grace_complete_here(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator")
    account = make_account(api_credits=100)
    job_id = await _submit_image(client, account)
    held = HeldOne(job_id)
    monkeypatch.setattr(orchestrator_main, "run_job", held)
    orchestrator = await _orchestrator(orchestrator_nc, ctx, tmp_path)
    orchestrator.settings.drain_grace_s = 20.0
    handled: list[Msg] = []
    handle = orchestrator.handle

    async def recording(msg: Msg) -> None:
        handled.append(msg)
        await handle(msg)

    monkeypatch.setattr(orchestrator, "handle", recording)
    stop = asyncio.Event()
    consuming = asyncio.create_task(orchestrator.consume(stop))

    await asyncio.wait_for(held.at_encode.wait(), 30)
    stop.set()  # what SIGTERM does in serve()
    await _wait_for_log(caplog, "draining: 1 running job(s)")
    await asyncio.sleep(0.5)
    assert not consuming.done()  # still waiting on the job, well inside the grace
    held.release.set()
    await asyncio.wait_for(consuming, 15)

    row = await wait_for_job_status(ctx, job_id, "completed")
    assert row.charged_credits == 5 and api_balance(ctx, account.account_id) == 95
    assert ledger_kinds(ctx, job_id) == Counter({"reserve": 1, "capture": 1})
    status = await read_status(orchestrator.bus.status_kv, job_id)
    assert status is not None and status.status == "completed" and status.drained_handbacks == 0
    assert (ctx.settings.storage_path / f"outputs/{job_id}.mp4").exists()
    assert f"job {job_id} handed back" not in caplog.text
    # Acked: the work-queue stream dropped the message, so nobody runs the job again.
    [message] = [m for m in handled if lipsync_pb2.JobRequest.FromString(m.data).job_id == job_id]
    with pytest.raises(NotFoundError):
        await orchestrator_nc.jetstream().get_msg(topology.JOBS_STREAM, message.metadata.sequence.stream)
