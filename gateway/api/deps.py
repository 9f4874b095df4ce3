"""Request dependencies as `Annotated` aliases: the gateway context, and who is calling
(API key only for /api/v1; a dashboard session for the session endpoints) with the plan's
rate limit applied."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from sqlalchemy.orm import Session

from gateway.accounts import keys, sessions
from gateway.accounts.principal import Principal
from gateway.api.errors import ApiError, unauthorized
from gateway.context import GatewayContext
from proto.vocabulary import ErrorCode

LOGIN_REQUIRED = "Please log in to create and manage API keys."
API_KEY_HELP = "Authorization: Bearer sk_... (the dashboard session cookie is not accepted here)."


def get_context(request: Request) -> GatewayContext:
    context: GatewayContext = request.app.state.gateway
    return context


Ctx = Annotated[GatewayContext, Depends(get_context)]


async def _enforce_rate_limit(ctx: GatewayContext, principal: Principal) -> None:
    limit = ctx.settings.plan(principal.plan).requests_per_minute
    retry_after_s = await ctx.request_limiter.hit(principal.rate_limit_bucket, limit)
    if retry_after_s is not None:
        raise ApiError(
            429, ErrorCode.RATE_LIMITED,
            f"Too many requests: your plan allows {limit} per minute",
            headers={"Retry-After": str(retry_after_s)},
        )


async def _from_api_key(ctx: GatewayContext, token: str) -> Principal | None:
    def lookup(session: Session) -> Principal | None:
        found = keys.authenticate_key(session, token)
        if found is None:
            return None
        key, account = found
        return Principal(account.id, account.email, account.plan, "api", key_id=key.id)

    if keys.parse_key(token) is None:  # typo or garbage: no database round trip
        return None
    return await ctx.key_cache.resolve(token, lambda: ctx.db.run_async(lookup))


async def _from_session(ctx: GatewayContext, token: str) -> Principal | None:
    return await ctx.db.run_async(lambda session: sessions.session_principal(session, token))


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


async def require_caller(request: Request) -> Principal:
    """An API key, which spends API credits. A session cookie is never accepted here, so a
    page on another site cannot make a logged-in browser call the API (dashboard jobs go
    through the dashboard's own CSRF-checked forms). The context is read straight off the
    app rather than as a sub-dependency: this runs on every API call, job polls included."""
    ctx = get_context(request)
    token = _bearer(request.headers.get("authorization"))
    if token is None:
        raise unauthorized("Missing API key: send Authorization: Bearer sk_...")
    principal = await _from_api_key(ctx, token) if token else None
    if principal is None:
        raise unauthorized("Invalid or revoked API key")
    await _enforce_rate_limit(ctx, principal)
    return principal


async def require_session(request: Request, ctx: Ctx) -> Principal:
    cookie = request.cookies.get(sessions.SESSION_COOKIE)
    principal = await _from_session(ctx, cookie) if cookie else None
    if principal is None:
        raise ApiError(401, ErrorCode.UNAUTHORIZED, LOGIN_REQUIRED)
    return principal


def document_bearer_auth(app: FastAPI, path_prefix: str = "/api/v1/") -> None:
    """Declare in the OpenAPI schema what `require_caller` reads from the request itself
    (a Header() parameter would cost FastAPI per-request work on every poll)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["apiKey"] = {"type": "http", "scheme": "bearer", "description": API_KEY_HELP}
            for path, operations in schema.get("paths", {}).items():
                if path.startswith(path_prefix):
                    for operation in operations.values():
                        operation["security"] = [{"apiKey": []}]
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


Caller = Annotated[Principal, Depends(require_caller)]
SessionUser = Annotated[Principal, Depends(require_session)]
