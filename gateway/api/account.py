"""Dashboard session endpoints: log in and out, manage API keys, see balances and the
ledger. Key management needs a logged-in user, never an API key, and each state change
made with the session cookie must show it comes from this site (CSRF token or Origin)."""
from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from gateway.accounts import keys, logins, sessions
from gateway.api.deps import Ctx, SessionUser
from gateway.api.errors import ApiError, invalid_request, not_found
from gateway.billing import ledger
from gateway.context import GatewayContext
from gateway.jobs import iso_utc
from gateway.models import Account, ApiKey
from gateway.web.security import check_cookie_request
from proto.vocabulary import ErrorCode

router = APIRouter(tags=["account"])

class KeyCreate(BaseModel):
    name: str = Field(default="", max_length=200)


def _key_public(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": f"sk_{key.prefix}_",
        "created_at": iso_utc(key.created_at),
        "last_used_at": iso_utc(key.last_used_at),
        "revoked_at": iso_utc(key.revoked_at),
        "revoked": key.revoked_at is not None,
    }


async def _login_fields(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError:
            raise invalid_request("body", "invalid JSON") from None
        if not isinstance(data, dict):
            raise invalid_request("body", "expected a JSON object")
        return {k: str(v) for k, v in data.items() if isinstance(v, str | int)}
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _safe_next(target: str) -> str | None:
    # Only same-site paths: "//evil.example" would be protocol-relative.
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


async def log_in(ctx: GatewayContext, email: str, password: str,
                 client_host: str) -> tuple[logins.LoginSuccess, str]:
    """Check the password and start a session: the one login path of the JSON endpoint and
    the dashboard form. Throttled per account and per client address (429 with Retry-After),
    401 when wrong; the argon2 check runs bounded and outside any transaction."""
    try:
        found = await logins.login_with_password(
            ctx.db, ctx.password_checks, ctx.login_policy,
            email=email, password=password,
            # The peer, or what a LIPSYNCD_TRUSTED_PROXIES proxy says (uvicorn rewrites it).
            client_ip=client_host, session_ttl_s=ctx.settings.session_ttl_s,
        )
    except logins.LoginThrottled as exc:
        raise ApiError(
            429, ErrorCode.RATE_LIMITED, exc.reason, headers={"Retry-After": str(exc.retry_after_s)}
        ) from None
    if found is None:
        raise ApiError(401, ErrorCode.INVALID_CREDENTIALS, "Invalid email or password")
    return found, found.session_token


def set_session_cookie(ctx: GatewayContext, response: Response, token: str) -> None:
    """HttpOnly (no script reads it), SameSite=Lax, Secure when the public URL is https."""
    response.set_cookie(
        sessions.SESSION_COOKIE,
        token,
        max_age=ctx.settings.session_ttl_s,
        httponly=True,
        samesite="lax",
        secure=ctx.settings.public_url.startswith("https://"),
        path="/",
    )


@router.post("/auth/login")
async def login(request: Request, ctx: Ctx) -> Response:
    fields = await _login_fields(request)
    for name in ("email", "password"):
        if not fields.get(name):
            raise invalid_request(name, "Field required")
    client = request.client.host if request.client else "unknown"
    account, token = await log_in(ctx, fields["email"], fields["password"], client)
    target = _safe_next(fields.get("next", ""))
    response: Response = (
        RedirectResponse(target, status_code=303)
        if target
        else JSONResponse({"ok": True, "email": account.email})
    )
    set_session_cookie(ctx, response, token)
    return response


@router.post("/auth/logout")
async def logout(request: Request, ctx: Ctx) -> Response:
    token = request.cookies.get(sessions.SESSION_COOKIE)
    if token:
        check_cookie_request(request)
        await ctx.db.run_async(lambda s: sessions.end_session(s, token))
    response = JSONResponse({"ok": True})
    response.delete_cookie(sessions.SESSION_COOKIE, path="/")
    return response


@router.get("/api/keys")
async def list_api_keys(ctx: Ctx, user: SessionUser) -> dict[str, Any]:
    rows = await ctx.db.run_async(lambda s: keys.list_keys(s, user.account_id))
    return {"data": [_key_public(key) for key in rows]}


@router.post("/api/keys", status_code=201)
async def create_api_key(
    request: Request, ctx: Ctx, user: SessionUser, body: KeyCreate | None = None
) -> dict[str, Any]:
    """Create a key; its full value is in this answer only. Needs the session cookie and
    either an `X-CSRF-Token` header or a same-origin `Origin`."""
    check_cookie_request(request)
    name = body.name if body else ""

    def create(session: Session) -> dict[str, Any]:
        new = keys.create_key(session, user.account_id, name)
        key = session.get(ApiKey, new.key_id)
        assert key is not None
        return {**_key_public(key), "key": new.plaintext}

    return await ctx.db.run_async(create)


@router.delete("/api/keys/{key_id}", status_code=204)
async def revoke_api_key(key_id: str, request: Request, ctx: Ctx, user: SessionUser) -> Response:
    check_cookie_request(request)
    if not await ctx.db.run_async(lambda s: keys.revoke_key(s, user.account_id, key_id)):
        raise not_found("API key")
    ctx.key_cache.invalidate_key(key_id)
    return Response(status_code=204)


@router.get("/api/account")
async def get_account(
    ctx: Ctx,
    user: SessionUser,
    ledger_limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ledger_before: int | None = None,
) -> dict[str, Any]:
    def read(session: Session) -> dict[str, Any]:
        account = session.get(Account, user.account_id)
        assert account is not None
        entries = ledger.history(session, account.id, ledger_limit, ledger_before)
        return {
            "email": account.email,
            "plan": account.plan,
            "api_credits": account.api_credits,
            "app_credits": account.app_credits,
            "webhook_secret_set": bool(account.webhook_secret),
            "ledger": [
                {
                    "id": entry.id,
                    "kind": entry.kind,
                    "credit_kind": entry.credit_kind,
                    "credits": entry.credits,
                    "delta": entry.delta,
                    "balance_after": entry.balance_after,
                    "job_id": entry.job_id,
                    "note": entry.note,
                    "created_at": iso_utc(entry.created_at),
                }
                for entry in entries
            ],
            "ledger_next_before": entries[-1].id if len(entries) == ledger_limit else None,
        }

    return await ctx.db.run_async(read)
