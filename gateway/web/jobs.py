"""The jobs pages and the playground. Reading, cancelling and submitting call
`gateway.jobs` (the API's functions) with the session's principal, whose jobs spend app
credits; uploads go through the API's own upload handler."""
from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from gateway import jobs, outputs
from gateway.accounts.principal import Principal
from gateway.api import uploads
from gateway.api.errors import ApiError
from gateway.api.schemas import FormStateBase, ImageFormState, MultiFormState, VideoFormState
from gateway.models import Account
from gateway.web.i18n import locale_for
from gateway.web.render import render
from gateway.web.security import WebUser, check_csrf, context_of
from proto.vocabulary import ErrorCode

router = APIRouter(include_in_schema=False)

JOBS_PER_PAGE = 50
FORM_STATES: dict[str, type[FormStateBase]] = {
    "lipsync-image": ImageFormState,
    "lipsync-video": VideoFormState,
    "lipsync-image-multi": MultiFormState,
}
# Which media each mode takes, in the order the form shows them.
MODE_INPUTS = {
    "lipsync-image": ("image", "audio"),
    "lipsync-video": ("video", "audio"),
    "lipsync-image-multi": ("image", "left_audio", "right_audio"),
}
FILE_ROLES = frozenset(role for roles in MODE_INPUTS.values() for role in roles)


@router.get("/jobs")
async def jobs_page(request: Request, user: WebUser, cursor: str | None = None) -> Response:
    ctx = context_of(request)
    page, next_cursor = await jobs.list_jobs(ctx, user, None, JOBS_PER_PAGE, cursor)
    return render(request, "jobs.html", user, title="Jobs", jobs=page, next_cursor=next_cursor)


async def _read(request: Request, user: Principal, job_id: str) -> Any:
    try:
        return await jobs.read_job(context_of(request), user, job_id)
    except ApiError as exc:
        if exc.status_code == 404:
            return None
        raise


def _not_found(request: Request, user: Principal) -> Response:
    return render(request, "error.html", user, status_code=404, title="Not found", message="Not found")


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str, user: WebUser, deleted: int = 0) -> Response:
    job = await _read(request, user, job_id)
    if job is None:
        return _not_found(request, user)
    return render(request, "job.html", user, title="Job", job=job,
                  notice="Output deleted" if deleted else None)


@router.get("/jobs/{job_id}/status")
async def job_status(request: Request, job_id: str, user: WebUser) -> Response:
    """The small answer the pages poll every 2 s while a job is processing."""
    job = await _read(request, user, job_id)
    if job is None:
        return JSONResponse({"error": "Job not found", "error_code": "not_found"}, status_code=404)
    _ = locale_for(request).gettext
    return JSONResponse({
        "id": job.id, "status": job.status, "progress": job.progress, "stage": job.stage,
        "stage_label": f"{_(job.status)} · {job.stage}" if job.stage else _(job.status),
    }, headers={"Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/delete-output")
async def delete_output(
    request: Request, job_id: str, user: WebUser, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    check_csrf(request, csrf_token)
    await outputs.delete_output(context_of(request), user, _uuid_or_404(job_id))
    return RedirectResponse(f"/jobs/{job_id}?deleted=1", status_code=303)


@router.post("/jobs/{job_id}/cancel")
async def cancel(
    request: Request, job_id: str, user: WebUser, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    check_csrf(request, csrf_token)
    await jobs.cancel_job(context_of(request), user, job_id)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _uuid_or_404(job_id: str) -> str:
    try:
        return str(uuid.UUID(job_id))
    except ValueError:
        raise ApiError(404, ErrorCode.NOT_FOUND, "Job not found") from None


async def _default_webhook(request: Request, user: Principal) -> str:
    ctx = context_of(request)
    account = await ctx.db.run_async(lambda s: s.get(Account, user.account_id))
    return account.webhook_url if account else ""


@router.get("/playground")
async def playground_page(request: Request, user: WebUser) -> Response:
    return render(request, "playground.html", user, title="Playground", values={},
                  modes=MODE_INPUTS, default_webhook=await _default_webhook(request, user))


async def _media_url(request: Request, user: Principal, form: Any, role: str) -> str | None:
    """The role's uploaded file (stored by the API's upload handler), else its URL field."""
    upload = form.get(f"{role}_file")
    if isinstance(upload, UploadFile) and upload.filename:
        stored = await uploads.store_upload(context_of(request), upload)
        return str(stored["url"])
    text = form.get(f"{role}_url")
    return text.strip() if isinstance(text, str) and text.strip() else None


@router.post("/playground")
async def playground_submit(request: Request, user: WebUser) -> Response:
    try:
        # Every mode's file inputs are posted (the hidden ones empty); the body is bounded by BodyLimit.
        form = await request.form(max_files=len(FILE_ROLES), max_fields=30)
    except MultiPartException as exc:
        raise ApiError(422, ErrorCode.INVALID_REQUEST, exc.message) from None
    check_csrf(request, str(form.get("csrf_token", "")))
    ctx = context_of(request)
    mode = str(form.get("mode", "lipsync-image"))
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}

    def again(status_code: int, error: str) -> Response:
        return render(request, "playground.html", user, status_code=status_code, title="Playground",
                      values=values, modes=MODE_INPUTS, default_webhook=values.get("webhook", ""),
                      error=error)

    if mode not in FORM_STATES:
        return again(422, "mode: unknown mode")
    try:
        state: dict[str, Any] = {}
        for role in MODE_INPUTS[mode]:
            if (url := await _media_url(request, user, form, role)) is not None:
                state[role] = url
        for name in ("resolution", "prompt", "sync_mode", "order"):
            if values.get(name):
                state[name] = values[name]
        if values.get("seed", "").strip():
            state["seed"] = values["seed"].strip()
        form_state = FORM_STATES[mode].model_validate(state)
        submission = jobs.Submission(model=mode, form_state=form_state,
                                     webhook_url=values.get("webhook", "").strip())
        submitted = await jobs.submit_job(ctx, user, submission)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or "formState"
        return again(422, f"{field}: {first.get('msg', 'invalid value')}")
    except ApiError as exc:
        return again(exc.status_code, exc.message)
    return RedirectResponse(f"/jobs/{submitted.job_id}", status_code=303)
