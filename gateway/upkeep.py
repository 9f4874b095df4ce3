"""The gateway's housekeeping: the reaper that settles jobs nobody will finish (left
`processing` with no live heartbeat: the gateway crashed between commit and publish, or the
last attempt could not publish its event), and the free-disk check made before work is
accepted. Any number of replicas may reap at once: each job's transition is the same
conditional update (row locked, `status = 'processing'`) that cancel and settlement use, so
exactly one of them records it."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import time

from sqlalchemy import select

from gateway.api.errors import ApiError
from gateway.billing.settlement import FAILED, PROCESSING, Outcome, settle
from gateway.bus import BusUnavailableError
from gateway.context import GatewayContext
from gateway.models import Job, utcnow
from proto import lipsync_pb2
from proto.vocabulary import TERMINAL_STATUSES, ErrorCode

log = logging.getLogger(__name__)

REAPED_ERROR = "The job stopped without a result; nothing was charged"
REAP_BATCH = 200


def require_free_disk(ctx: GatewayContext) -> None:
    """503 before accepting work when the storage disk is nearly full, rather than a
    half-written upload or output later."""
    free = shutil.disk_usage(ctx.settings.storage_path).free
    if free < ctx.settings.min_free_disk_bytes:
        log.warning("refusing work: %d bytes free under %s", free, ctx.settings.storage_path)
        raise ApiError(503, ErrorCode.INSUFFICIENT_STORAGE, "The server is low on disk space; retry later",
                       headers={"Retry-After": "60"})


async def reap_stale_jobs(ctx: GatewayContext) -> int:
    """Settle every job that is processing but dead; returns how many this call settled."""
    settings = ctx.settings
    now = utcnow()
    oldest_live = now - dt.timedelta(seconds=min(settings.reaper_stale_s, settings.reaper_queued_s))
    candidates = await ctx.db.run_async(lambda s: list(s.execute(
        select(Job.id, Job.created_at)
        .where(Job.status == PROCESSING, Job.created_at < oldest_live)
        .order_by(Job.created_at)
        .limit(REAP_BATCH)
    )))
    reaped = 0
    for job_id, created_at in candidates:
        try:
            live = await ctx.bus.read_status(job_id)
        except BusUnavailableError as exc:
            log.warning("reaper paused: job liveness unknown without the bus (%s)", exc)
            break
        outcome = _outcome_if_dead(live, created_at, now, settings.reaper_stale_s, settings.reaper_queued_s)
        if outcome is None:
            continue
        # awaited in this iteration: the lambda never outlives job_id/outcome
        changed = await ctx.db.run_async(lambda s: settle(s, ctx.prices, job_id, outcome))  # noqa: B023
        if not changed:
            continue  # another replica, a cancel or the real event came first
        reaped += 1
        log.warning("reaped job %s (created %s): %s", job_id, created_at, outcome.status)
        try:  # an orchestrator that picks it up after all drops it at once
            await ctx.bus.request_cancel(job_id, int(time.time() * 1000))
        except BusUnavailableError as exc:
            log.warning("cancel flag for reaped job %s not set: %s", job_id, exc)
    return reaped


def _outcome_if_dead(live: lipsync_pb2.JobStatus | None, created_at: dt.datetime, now: dt.datetime,
                     stale_s: float, queued_s: float) -> Outcome | None:
    if live is None:  # never started: queued, or never published at all
        if (now - created_at).total_seconds() < queued_s:
            return None
    elif live.status in TERMINAL_STATUSES:
        return Outcome.from_status(live)  # finished, but its event never arrived
    elif time.time() * 1000 - live.updated_at_ms < stale_s * 1000:
        return None  # heart still beating
    return Outcome(status=FAILED, error=REAPED_ERROR, error_code=ErrorCode.INTERNAL_ERROR)


async def reap_periodically(ctx: GatewayContext, stop: asyncio.Event) -> None:
    """A round every reaper_interval_s until `stop` is set. A cancel alone may not end it:
    nats-py can turn the cancel of a pending status read into a timeout, which a round takes
    for a bus outage and gets over; the next wait then sees `stop`."""
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=ctx.settings.reaper_interval_s)
            return
        except TimeoutError:
            pass
        try:
            await reap_stale_jobs(ctx)
        except Exception:  # a database outage: the next round tries again
            log.exception("reaping stale jobs failed")
