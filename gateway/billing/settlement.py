"""Settling a job's credits: raise the reservation once the media is probed, capture on
completion, release on failure or cancel. Each function is one database transaction's
worth of work and is safe to repeat (a redelivered event finds the job already final)."""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.billing import ledger
from gateway.billing.pricing import PriceTable
from gateway.models import Job, utcnow
from proto import lipsync_pb2
from proto.jobobject import JobOutcome, datetime_from_ms
from proto.vocabulary import TERMINAL_STATUSES, ErrorCode, JobStatus

log = logging.getLogger(__name__)

PROCESSING = JobStatus.PROCESSING
COMPLETED = JobStatus.COMPLETED
FAILED = JobStatus.FAILED
CANCELED = JobStatus.CANCELED


@dataclass(frozen=True, kw_only=True)
class Outcome(JobOutcome):
    """How a job ended, as the gateway records it: the job's outcome plus the output's
    duration, which settles the price."""

    output_duration_s: float | None = None

    @classmethod
    def from_status(cls, status: lipsync_pb2.JobStatus, **more: Any) -> Outcome:
        more.setdefault("output_duration_s", status.output_duration_s or None)
        return super().from_status(status, **more)


QUALITY_KEY = "quality"  # kept beside the timings in the job row's timings_json (no column of its own yet)


def timings_record(timings_ms: Mapping[str, int], quality: Mapping[str, Any] | None) -> str | None:
    """The stored timings_json: the stage timings, and the quality block under QUALITY_KEY."""
    record: dict[str, Any] = dict(timings_ms)
    if quality is not None:
        record[QUALITY_KEY] = dict(quality)
    return json.dumps(record) if record else None


def read_timings_record(text: str | None) -> tuple[dict[str, int], dict[str, Any] | None]:
    """(stage timings, quality block) from a stored timings_json."""
    record = json.loads(text) if text else {}
    quality = record.pop(QUALITY_KEY, None)
    return record, quality


def lock_job(session: Session, job_id: str) -> Job | None:
    """The job row, locked for this transaction (PostgreSQL; SQLite already serialises)."""
    return session.scalar(select(Job).where(Job.id == job_id).with_for_update())


def settle(session: Session, prices: PriceTable, job_id: str, outcome: Outcome) -> bool:
    """Record a final state and move the credits; False if there was nothing to do."""
    if outcome.status not in TERMINAL_STATUSES:
        return False
    job = lock_job(session, job_id)
    if job is None:
        log.warning("job event for unknown job %s ignored", job_id)
        return False
    if job.status != PROCESSING:
        return False  # already settled: a redelivered event, or canceled meanwhile
    if outcome.status == COMPLETED:
        charge = job.reserved_credits
        if outcome.output_duration_s:
            charge = min(charge, prices.price(outcome.output_duration_s, job.resolution))
        ledger.capture(session, job.account_id, job.credit_kind, job.id, charge)
        if job.reserved_credits > charge:
            excess = job.reserved_credits - charge
            ledger.release(session, job.account_id, job.credit_kind, job.id, excess)
        job.charged_credits = charge
        job.output_key = outcome.output_key or None
        job.execution_time_ms = outcome.execution_time_ms
        job.timings_json = timings_record(outcome.timings_ms, outcome.quality)
        job.output_duration_s = outcome.output_duration_s
    else:
        ledger.release(session, job.account_id, job.credit_kind, job.id, job.reserved_credits)
        job.error = outcome.error
        job.error_code = outcome.error_code or (ErrorCode.CANCELED if outcome.status == CANCELED else "")
    job.status = outcome.status
    job.completed_at = datetime_from_ms(outcome.completed_at_ms) if outcome.completed_at_ms else utcnow()
    return True


def raise_reservation(
    session: Session, prices: PriceTable, request: lipsync_pb2.ReserveRequest
) -> lipsync_pb2.ReserveReply:
    job = lock_job(session, request.job_id)
    if job is None:
        return lipsync_pb2.ReserveReply(ok=False, error_code=ErrorCode.UNKNOWN_JOB, error="Unknown job")
    if job.status != PROCESSING:
        return lipsync_pb2.ReserveReply(
            ok=False, error_code=ErrorCode.CANCELED, error=f"Job is {job.status}",
            reserved_credits=job.reserved_credits,
        )
    price = prices.price(request.output_duration_s, job.resolution)
    if price > job.reserved_credits:
        extra = price - job.reserved_credits
        if not ledger.raise_reservation(session, job.account_id, job.credit_kind, job.id, extra):
            available = ledger.balance(session, job.account_id, job.credit_kind)
            return lipsync_pb2.ReserveReply(
                ok=False,
                error_code=ErrorCode.INSUFFICIENT_CREDITS,
                error=(
                    f"Not enough {job.credit_kind.upper()} credits: this video costs {price} "
                    f"credits, {job.reserved_credits + available} available"
                ),
                reserved_credits=job.reserved_credits,
            )
        job.reserved_credits = price
    return lipsync_pb2.ReserveReply(ok=True, reserved_credits=job.reserved_credits)


def finalize(session: Session, prices: PriceTable, outcome: Outcome, job_id: str) -> lipsync_pb2.ReserveReply:
    """The one decision on a job's final state, asked for by the orchestrator before it
    publishes anything: the conditional transition from processing (row locked, the same
    one the cancel route takes) either records `outcome` now, or finds that another final
    state won, in which case the orchestrator must drop its result (delete the output)."""
    if settle(session, prices, job_id, outcome):
        return lipsync_pb2.ReserveReply(ok=True)
    job = session.get(Job, job_id)
    if job is None:
        return lipsync_pb2.ReserveReply(ok=False, error_code=ErrorCode.UNKNOWN_JOB, error="Unknown job")
    if job.status == outcome.status:  # a repeated request after a lost reply
        return lipsync_pb2.ReserveReply(ok=True)
    return lipsync_pb2.ReserveReply(ok=False, error_code=job.status, error=f"Job is {job.status}")
