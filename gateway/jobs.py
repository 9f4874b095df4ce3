"""Jobs as the API sees them: submit (validate limits, reserve credits, record, publish),
read (database row merged with live status from the bus), cancel and list."""
from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import secrets
import uuid
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.accounts.principal import Principal
from gateway.accounts.users import ensure_webhook_secret
from gateway.api.errors import ApiError, invalid_request, not_found
from gateway.api.schemas import FormStateBase, JobPublic
from gateway.billing import ledger
from gateway.billing.settlement import (
    CANCELED,
    FAILED,
    PROCESSING,
    Outcome,
    read_timings_record,
    settle,
)
from gateway.bus import BusUnavailableError, PublishUncertainError
from gateway.context import GatewayContext
from gateway.files import FileSigner
from gateway.jobviews import JobView, read_owned_job
from gateway.metrics import JOBS_SUBMITTED
from gateway.models import Account, Job, utcnow
from gateway.upkeep import require_free_disk
from proto import lipsync_pb2
from proto.jobobject import JobRecord, job_object, ms_from_datetime, outcome_fields
from proto.vocabulary import TERMINAL_STATUSES, ErrorCode

log = logging.getLogger(__name__)

INPUT_ROLES = ("video", "audio", "image", "left_audio", "right_audio", "mask_image")
PUBLISH_ATTEMPTS = 3
PUBLISH_BACKOFF_S = 0.2
RANDOM_SEED_LIMIT = 2**31


@dataclass(frozen=True)
class Submission:
    model: str
    form_state: FormStateBase
    webhook_url: str = ""
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Submitted:
    job_id: str
    status: str
    created: bool


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _check_webhook(ctx: GatewayContext, webhook_url: str) -> None:
    if webhook_url and not ctx.settings.allow_private_urls:
        if urlsplit(webhook_url).scheme.lower() != "https":
            raise invalid_request("webhook", "must be an https URL")


async def submit_job(ctx: GatewayContext, principal: Principal, submission: Submission) -> Submitted:
    # 1. Checks that need no database: webhook, plan limits, a bus to publish on.
    _check_webhook(ctx, submission.webhook_url)
    resolution = submission.form_state.resolution
    plan = ctx.settings.plan(principal.plan)
    if not plan.allows_resolution(resolution):
        raise ApiError(
            403, ErrorCode.RESOLUTION_NOT_ALLOWED,
            f"Your plan allows resolutions up to {plan.max_resolution}",
            field="formState.resolution",
        )
    if not ctx.bus.ready:
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "The job queue is unavailable; retry shortly")
    require_free_disk(ctx)

    # 2. Record the job and reserve the minimum charge in one transaction.
    requested = submission.form_state.model_dump(mode="json", exclude_none=True)
    request_hash = _sha256(
        json.dumps([submission.model, requested, submission.webhook_url], sort_keys=True)
    )
    key_hash = _sha256(submission.idempotency_key) if submission.idempotency_key else None
    seed = submission.form_state.seed
    if seed is None or seed == -1:
        seed = secrets.randbelow(RANDOM_SEED_LIMIT)
    new_job = Job(
        id=str(uuid.uuid4()),
        account_id=principal.account_id,
        model=submission.model,
        status=PROCESSING,
        credit_kind=principal.credit_kind,
        resolution=resolution,
        seed=seed,
        form_state_json=json.dumps({**requested, "seed": seed}),
        webhook_url=submission.webhook_url,
        idempotency_key_sha256=key_hash,
        request_sha256=request_hash,
        reserved_credits=ctx.prices.minimum_charge(resolution),
        created_at=utcnow(),
    )
    max_concurrent = plan.max_concurrent_jobs
    try:
        job, request, created = await ctx.db.run_async(
            lambda s: _record(s, new_job, max_concurrent)
        )
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key committed first.
        job, request, created = await ctx.db.run_async(lambda s: _record(s, new_job, max_concurrent))
    if not created and job.request_sha256 != request_hash:
        raise ApiError(
            409, ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "This Idempotency-Key was used with a different request",
        )
    if job.status != PROCESSING:
        return Submitted(job_id=job.id, status=job.status, created=False)

    # 3. Publish (a replayed request publishes again: JetStream drops the duplicate, and a
    # job whose first publish was lost to a crash gets queued after all).
    await _publish_or_fail(ctx, request)
    if created:
        JOBS_SUBMITTED.labels(model=job.model, credit_kind=job.credit_kind).inc()
    return Submitted(job_id=job.id, status=PROCESSING, created=created)


def _record(
    session: Session, new_job: Job, max_concurrent: int
) -> tuple[Job, lipsync_pb2.JobRequest, bool]:
    if new_job.idempotency_key_sha256:
        existing = session.scalar(
            select(Job).where(
                Job.account_id == new_job.account_id,
                Job.idempotency_key_sha256 == new_job.idempotency_key_sha256,
            )
        )
        if existing is not None:
            return existing, job_request(session, existing), False
    # The conditional debit comes first: it locks the account row, so the concurrency
    # count below cannot race another submission of the same account.
    if not ledger.reserve(
        session, new_job.account_id, new_job.credit_kind, new_job.id, new_job.reserved_credits
    ):
        available = ledger.balance(session, new_job.account_id, new_job.credit_kind)
        raise ApiError(
            402, ErrorCode.INSUFFICIENT_CREDITS,
            f"Not enough {new_job.credit_kind.upper()} credits: this job needs at least "
            f"{new_job.reserved_credits}, {available} available",
        )
    running = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.account_id == new_job.account_id, Job.status == PROCESSING)
    )
    if (running or 0) >= max_concurrent:
        raise ApiError(
            429, ErrorCode.TOO_MANY_CONCURRENT_JOBS,
            f"Your plan allows {max_concurrent} jobs at a time; wait for one to finish",
            headers={"Retry-After": "10"},
        )
    session.add(new_job)
    session.flush()
    return new_job, job_request(session, new_job), True


def job_request(session: Session, job: Job) -> lipsync_pb2.JobRequest:
    """The bus message for a job, rebuilt from its row."""
    form = json.loads(job.form_state_json)
    secret = ""
    if job.webhook_url:
        account = session.get(Account, job.account_id)
        assert account is not None
        secret = ensure_webhook_secret(session, account)
    return lipsync_pb2.JobRequest(
        job_id=job.id,
        model=job.model,
        account_id=job.account_id,
        inputs={role: form[role] for role in INPUT_ROLES if form.get(role)},
        audios=form.get("audios", []),
        resolution=job.resolution,
        sync_mode=form.get("sync_mode", ""),
        order=form.get("order", ""),
        prompt=form.get("prompt", ""),
        seed=job.seed,
        webhook_url=job.webhook_url,
        webhook_secret=secret,
        created_at_ms=ms_from_datetime(job.created_at),
        form_state_json=job.form_state_json,
        reserved_credits=job.reserved_credits,
    )


async def _publish_or_fail(ctx: GatewayContext, request: lipsync_pb2.JobRequest) -> None:
    uncertain = False
    for attempt in range(PUBLISH_ATTEMPTS):
        try:
            await ctx.bus.publish_job(request)
            return
        except BusUnavailableError as exc:
            uncertain = uncertain or isinstance(exc, PublishUncertainError)
            log.warning("publishing job %s failed (attempt %d): %s", request.job_id, attempt + 1, exc)
            await asyncio.sleep(PUBLISH_BACKOFF_S * 2**attempt)
    if uncertain:
        # A timed-out publish may have been stored and may still run: refunding now could
        # give it away. Keep the reservation; if it never runs, the reaper fails and refunds
        # it once its deadline passes (a replay with the same Idempotency-Key publishes again).
        log.error("job %s may not be queued; the reaper settles it if it never runs", request.job_id)
        return
    # Nobody will run it: fail it and give the credits back rather than keep them.
    outcome = Outcome(status=FAILED, error="Could not queue the job", error_code=ErrorCode.INTERNAL_ERROR)
    await ctx.db.run_async(lambda s: settle(s, ctx.prices, request.job_id, outcome))
    raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "Could not queue the job; nothing was charged")


def _owned_job(session: Session, account_id: str, job_id: str) -> Job:
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise not_found() from None
    job = session.get(Job, job_id)
    if job is None or job.account_id != account_id:
        raise not_found()  # someone else's job does not exist, as far as you can tell
    return job


async def read_job(ctx: GatewayContext, principal: Principal, job_id: str) -> JobPublic:
    """A finished job from memory, else one read-only query; the bus is asked for live
    progress only while the job is processing."""
    job = ctx.finished_jobs.get(principal.account_id, job_id)
    if job is None:
        try:
            uuid.UUID(job_id)
        except ValueError:
            raise not_found() from None
        job = await ctx.db.read_async(lambda c: read_owned_job(c, principal.account_id, job_id))
        if job is None:
            raise not_found()  # someone else's job does not exist, as far as you can tell
        ctx.finished_jobs.remember(principal.account_id, job)
    live = await _live_status(ctx, job)
    return to_public(job, live, ctx.signer, ctx.settings.output_url_ttl_s,
                     ctx.settings.file_retention_s)


async def _live_status(ctx: GatewayContext, job: Job | JobView) -> lipsync_pb2.JobStatus | None:
    if job.status != PROCESSING or not ctx.bus.ready:
        return None
    try:
        return await ctx.bus.read_status(job.id)
    except BusUnavailableError as exc:
        log.warning("live status of job %s unavailable: %s", job.id, exc)
        return None


def iso_utc(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_record(job: Job | JobView, live: lipsync_pb2.JobStatus | None) -> JobRecord:
    """The job as the database row says, or as the live status says while the row still
    says processing (live progress, or a final state not yet settled by the consumer)."""
    timings, quality = read_timings_record(job.timings_json)
    record = JobRecord(
        id=job.id,
        model=job.model,
        status=job.status,
        seed=job.seed,
        form_state_json=job.form_state_json,
        created_at_ms=ms_from_datetime(job.created_at),
        output_key=job.output_key or "",
        error=job.error,
        error_code=job.error_code,
        execution_time_ms=job.execution_time_ms,
        timings_ms=timings,
        completed_at_ms=ms_from_datetime(job.completed_at) if job.completed_at else None,
        quality=quality,
    )
    if live is None or job.status != PROCESSING:
        return record
    if live.status in TERMINAL_STATUSES:
        return replace(record, **outcome_fields(live))
    return replace(record, progress=live.progress, stage=live.stage)


def to_public(
    job: Job | JobView, live: lipsync_pb2.JobStatus | None, signer: FileSigner, url_ttl_s: int,
    retention_s: float | None = None,
) -> JobPublic:
    """The job object; with `retention_s`, an output past its retention (swept) is null."""
    return JobPublic(**job_object(job_record(job, live), signer, url_ttl_s, retention_s=retention_s))


async def cancel_job(ctx: GatewayContext, principal: Principal, job_id: str) -> JobPublic:
    # One moment for the row and the cancel flag: the orchestrator's canceled status (and
    # its webhook body) carries the same completed_at as GET.
    canceled_at_ms = ms_from_datetime(utcnow())

    def cancel(session: Session) -> Job:
        job = _owned_job(session, principal.account_id, job_id)
        outcome = Outcome(status=CANCELED, error_code=ErrorCode.CANCELED, completed_at_ms=canceled_at_ms)
        if not settle(session, ctx.prices, job.id, outcome):
            raise ApiError(409, ErrorCode.JOB_NOT_CANCELABLE, f"Job is already {job.status}")
        return job

    job = await ctx.db.run_async(cancel)
    try:
        await ctx.bus.request_cancel(job.id, canceled_at_ms)
    except BusUnavailableError as exc:
        # The credits are back either way; the orchestrator's result will be ignored.
        log.warning("cancel flag for job %s not set: %s", job.id, exc)
    return to_public(job, None, ctx.signer, ctx.settings.output_url_ttl_s,
                     ctx.settings.file_retention_s)


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        return dt.datetime.fromisoformat(created), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_request("cursor", "invalid cursor") from None


async def list_jobs(
    ctx: GatewayContext, principal: Principal, status: str | None, limit: int, cursor: str | None
) -> tuple[list[JobPublic], str | None]:
    def query(session: Session) -> list[Job]:
        statement = select(Job).where(Job.account_id == principal.account_id)
        if status:
            statement = statement.where(Job.status == status)
        if cursor:
            created, job_id = _decode_cursor(cursor)
            statement = statement.where(
                or_(Job.created_at < created, (Job.created_at == created) & (Job.id < job_id))
            )
        order = (Job.created_at.desc(), Job.id.desc())
        return list(session.scalars(statement.order_by(*order).limit(limit + 1)))

    rows = await ctx.db.run_async(query)
    page, more = rows[:limit], len(rows) > limit
    lives = await asyncio.gather(*(_live_status(ctx, job) for job in page))
    jobs = [to_public(j, live, ctx.signer, ctx.settings.output_url_ttl_s,
                     ctx.settings.file_retention_s) for j, live in zip(page, lives, strict=True)]
    return jobs, (_encode_cursor(page[-1]) if more and page else None)
