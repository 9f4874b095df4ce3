"""A job that runs past its deadline (base + per-second x its output length) fails with
`deadline_exceeded` and is refunded, and heartbeats keep flowing while one of its steps
blocks a thread: played with the real gateway app, the real nats-server and the real
Orchestrator class, whose pipeline hangs in a blocking step."""
from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

from gateway.context import GatewayContext
from orchestrator import main as orchestrator_main
from orchestrator.pipeline import JobResources, JobResult
from orchestrator.status import JobReporter, read_status
from proto import lipsync_pb2
from tests.integration.conftest_gateway import ApiAccount, api_balance, wait_for_job_status
from tests.integration.test_gateway_billing import ledger_kinds
from tests.integration.test_job_final_state import _job_message, _orchestrator, _submit_image

pytestmark = pytest.mark.integration

MakeAccount = Callable[..., ApiAccount]


class HungDecode:
    """Prices the job at 4 s of output, then blocks a worker thread (a decoder that never
    returns) until the test lets it go."""

    def __init__(self) -> None:
        self.unblock = threading.Event()
        self.blocked_at_ms = 0

    async def __call__(self, request: lipsync_pb2.JobRequest, reporter: JobReporter,
                       res: JobResources, scratch: Path) -> JobResult:
        await reporter.stage("analysis", 0.1)
        reporter.expected_duration_s = 4.0
        self.blocked_at_ms = int(time.time() * 1000)
        await asyncio.to_thread(self.unblock.wait, 60)
        raise AssertionError("the deadline should have stopped the job before this")


async def test_job_past_its_deadline_fails_and_is_refunded(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    orchestrator_nc: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = make_account(api_credits=100)
    job_id = await _submit_image(client, account)
    hung = HungDecode()
    monkeypatch.setattr(orchestrator_main, "run_job", hung)
    orchestrator = await _orchestrator(orchestrator_nc, ctx, tmp_path)
    orchestrator.settings.job_deadline_base_s = 1.0
    orchestrator.settings.job_deadline_per_output_s = 0.5  # 1 + 0.5 x 4 s = 3 s
    orchestrator.settings.heartbeat_s = 0.5
    started = time.monotonic()
    handling = asyncio.create_task(orchestrator.handle(await _job_message(orchestrator_nc, job_id)))
    try:
        await asyncio.sleep(2.0)
        live = await read_status(orchestrator.bus.status_kv, job_id)
        assert live is not None and live.status == "processing"
        # The blocked thread does not stop the heartbeat: the record was rewritten since.
        assert live.updated_at_ms > hung.blocked_at_ms + 1000
        await asyncio.wait_for(handling, 20)
    finally:
        hung.unblock.set()
    assert 2.9 < time.monotonic() - started < 10

    row = await wait_for_job_status(ctx, job_id, "failed")
    assert row.error_code == "deadline_exceeded" and "3 s" in row.error
    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=account.headers)).json()
    assert job["status"] == "failed" and job["error_code"] == "deadline_exceeded"
    assert api_balance(ctx, account.account_id) == 100
    assert ledger_kinds(ctx, job_id) == Counter({"reserve": 1, "release": 1})
    assert await _submit_image(client, account)  # still taking jobs
