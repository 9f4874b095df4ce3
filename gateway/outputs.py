"""Deleting a finished job's output on its owner's request: the blob goes through the
storage interface, and the job row keeps the fact (`output_deleted_at`, no output key), so
the job object answers `output: null` from then on."""
from __future__ import annotations

import logging

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from gateway.accounts.principal import Principal
from gateway.api.errors import ApiError, not_found
from gateway.billing.settlement import COMPLETED
from gateway.context import GatewayContext
from gateway.models import Job, utcnow
from postprocess.storage import Storage
from proto.vocabulary import ErrorCode

log = logging.getLogger(__name__)


def output_storage(ctx: GatewayContext) -> Storage:
    return ctx.storage  # the configured backend: the local directory or S3


async def delete_output(ctx: GatewayContext, principal: Principal, job_id: str) -> None:
    """Remove the job's result file; 404 for someone else's job, 409 while it has none."""

    def mark(session: Session) -> str:
        job = session.get(Job, job_id)
        if job is None or job.account_id != principal.account_id:
            raise not_found()
        if job.status != COMPLETED or not job.output_key:
            raise ApiError(409, ErrorCode.NO_OUTPUT, "This job has no output to delete")
        key = job.output_key
        job.output_key = None
        job.output_deleted_at = utcnow()
        return key

    key = await ctx.db.run_async(mark)
    ctx.finished_jobs.forget(principal.account_id, job_id)
    # The row is marked first: a crash between the two steps leaves an orphan file, never
    # a job that links to a missing one.
    await run_in_threadpool(output_storage(ctx).delete, key)
    log.info("output %s of job %s deleted by its owner", key, job_id)
