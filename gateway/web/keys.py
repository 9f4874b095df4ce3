"""The API keys page: list, create (the full key shown once, with a copy button) and
revoke, through the same `gateway.accounts.keys` functions as the JSON endpoints."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from gateway.accounts import keys
from gateway.web.render import render
from gateway.web.security import WebUser, check_csrf, context_of

router = APIRouter(include_in_schema=False)


async def _page(request: Request, user: WebUser, **extra: Any) -> Response:
    ctx = context_of(request)
    rows = await ctx.db.run_async(lambda s: keys.list_keys(s, user.account_id))
    return render(request, "keys.html", user, title="API keys", keys=rows, **extra)


@router.get("/keys")
async def keys_page(request: Request, user: WebUser, revoked: int = 0) -> Response:
    return await _page(request, user, notice="Revoked" if revoked else None)


@router.post("/keys")
async def create_key(
    request: Request, user: WebUser,
    name: Annotated[str, Form(max_length=200)] = "", csrf_token: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, csrf_token)
    ctx = context_of(request)
    new = await ctx.db.run_async(lambda s: keys.create_key(s, user.account_id, name.strip()))
    return await _page(request, user, new_key=new.plaintext)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(
    request: Request, key_id: str, user: WebUser, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    check_csrf(request, csrf_token)
    ctx = context_of(request)
    if not await ctx.db.run_async(lambda s: keys.revoke_key(s, user.account_id, key_id)):
        return render(request, "error.html", user, status_code=404, title="Not found",
                      message="Not found")
    ctx.key_cache.invalidate_key(key_id)
    return RedirectResponse("/keys?revoked=1", status_code=303)
