"""The webhooks page: the account's `whsec_` signing secret (revealed on request, rotated),
its default webhook URL with a signed test event, and recent delivery attempts."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from gateway import deliveries
from gateway.accounts import users
from gateway.models import Account, WebhookAttemptRow
from gateway.web.render import render
from gateway.web.security import WebUser, check_csrf, context_of

router = APIRouter(include_in_schema=False)

FormText = Annotated[str, Form()]


async def _page(request: Request, user: WebUser, status_code: int = 200, **extra: object) -> Response:
    ctx = context_of(request)

    def read(session: Session) -> tuple[Account, list[WebhookAttemptRow]]:
        account = session.get(Account, user.account_id)
        assert account is not None
        return account, deliveries.recent_attempts(session, account.id)

    account, attempts = await ctx.db.run_async(read)
    extra.setdefault("webhook_url", account.webhook_url)
    return render(request, "webhooks.html", user, status_code=status_code, title="Webhooks",
                  secret_set=bool(account.webhook_secret), attempts=attempts,
                  allow_private=ctx.settings.allow_private_urls, **extra)


@router.get("/webhooks")
async def webhooks_page(request: Request, user: WebUser) -> Response:
    return await _page(request, user)


@router.post("/webhooks/secret")
async def reveal_or_rotate(
    request: Request, user: WebUser, csrf_token: FormText = "", action: FormText = "reveal"
) -> Response:
    """Reveal (creating the secret if the account has none yet) or rotate it. A POST, so
    the secret never sits in a URL, a history entry or a cached GET answer."""
    check_csrf(request, csrf_token)
    ctx = context_of(request)

    def secret(session: Session) -> str:
        account = session.get(Account, user.account_id)
        assert account is not None
        if action == "rotate":
            return users.rotate_webhook_secret(session, account)
        return users.ensure_webhook_secret(session, account)

    value = await ctx.db.run_async(secret)
    return await _page(request, user, secret=value, notice="Rotate" if action == "rotate" else None)


@router.post("/webhooks/test")
async def send_test(
    request: Request, user: WebUser, csrf_token: FormText = "", url: FormText = ""
) -> Response:
    check_csrf(request, csrf_token)
    ctx = context_of(request)
    try:
        clean = deliveries.check_webhook_url(ctx, url)
    except ValueError as exc:
        return await _page(request, user, status_code=422, webhook_url=url,
                           error=f"url: {exc}")

    def remember(session: Session) -> None:
        account = session.get(Account, user.account_id)
        assert account is not None
        account.webhook_url = clean

    await ctx.db.run_async(remember)
    await deliveries.send_test_event(ctx, user, clean)
    return RedirectResponse("/webhooks#deliveries", status_code=303)
