"""The public job endpoints (SPEC section 3): three submissions, read, cancel and list."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from gateway import jobs
from gateway.api.deps import Caller, Ctx, get_context
from gateway.api.schemas import (
    HttpUrl,
    ImageJobCreate,
    JobAccepted,
    JobList,
    JobPublic,
    MultiJobCreate,
    VideoJobCreate,
)
from proto.vocabulary import JobStatus, Model

router = APIRouter(prefix="/api/v1", tags=["jobs"])

WebhookQuery = Annotated[HttpUrl | None, Query(description="Webhook URL (alternative to the body)")]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


async def _submit(
    ctx: Ctx,
    caller: Caller,
    model: str,
    body: VideoJobCreate | ImageJobCreate | MultiJobCreate,
    webhook: str | None,
    idempotency_key: str | None,
) -> JobAccepted:
    submission = jobs.Submission(
        model=model,
        form_state=body.formState,
        webhook_url=body.webhook or webhook or "",
        idempotency_key=idempotency_key or None,
    )
    submitted = await jobs.submit_job(ctx, caller, submission)
    return JobAccepted(id=submitted.job_id, status=submitted.status)


@router.post("/lipsync-video", response_model=JobAccepted)
async def create_video_job(
    body: VideoJobCreate, ctx: Ctx, caller: Caller,
    webhook: WebhookQuery = None, idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    """Replace the speech in an existing video, keeping lip sync."""
    return await _submit(ctx, caller, Model.VIDEO, body, webhook, idempotency_key)


@router.post("/lipsync-image", response_model=JobAccepted)
async def create_image_job(
    body: ImageJobCreate, ctx: Ctx, caller: Caller,
    webhook: WebhookQuery = None, idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    """One portrait image + audio → talking video."""
    return await _submit(ctx, caller, Model.IMAGE, body, webhook, idempotency_key)


@router.post("/lipsync-image-multi", response_model=JobAccepted)
async def create_multi_job(
    body: MultiJobCreate, ctx: Ctx, caller: Caller,
    webhook: WebhookQuery = None, idempotency_key: IdempotencyKey = None,
) -> JobAccepted:
    """One image with two people + two audios → conversation video."""
    return await _submit(ctx, caller, Model.IMAGE_MULTI, body, webhook, idempotency_key)


@router.get("/jobs/{requestId}", response_model=JobPublic)
async def get_job(requestId: str, request: Request, caller: Caller) -> JobPublic:  # noqa: N803
    """Job status and result; poll every 5-10 s until completed or failed."""
    # The hot polling path: one dependency (the caller), the context taken directly.
    return await jobs.read_job(get_context(request), caller, requestId)


@router.post("/jobs/{requestId}/cancel", response_model=JobPublic)
async def cancel_job(requestId: str, ctx: Ctx, caller: Caller) -> JobPublic:  # noqa: N803
    """Cancel a processing job; its reserved credits are released."""
    return await jobs.cancel_job(ctx, caller, requestId)


@router.get("/jobs", response_model=JobList)
async def list_jobs(
    ctx: Ctx,
    caller: Caller,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JobList:
    """Your jobs, newest first; pass `next_cursor` back as `cursor` for the next page."""
    data, next_cursor = await jobs.list_jobs(ctx, caller, status, limit, cursor)
    return JobList(data=data, next_cursor=next_cursor)
