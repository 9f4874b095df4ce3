"""Who is using the dashboard and whether a form really came from it: the session cookie
alone identifies the user (a Bearer key is never looked at here), and every state-changing
form carries a CSRF token bound to the session (or, before login, to a pre-session cookie)."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request, Response

from gateway.accounts import sessions
from gateway.accounts.principal import Principal
from gateway.context import GatewayContext

PRESESSION_COOKIE = "lipsyncd_presession"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(Exception):
    """Raised by a page that needs a session; answered with a redirect to /login."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRejected(Exception):
    """A state-changing request without a valid CSRF token (or same-origin Origin)."""


def context_of(request: Request) -> GatewayContext:
    ctx: GatewayContext = request.app.state.gateway
    return ctx


async def session_user(request: Request) -> Principal | None:
    """The dashboard user of this request's session cookie, or None."""
    token = request.cookies.get(sessions.SESSION_COOKIE)
    if not token:
        return None
    return await context_of(request).db.run_async(lambda session: sessions.session_principal(session, token))


async def require_web_user(request: Request) -> Principal:
    user = await session_user(request)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return user


WebUser = Annotated[Principal, Depends(require_web_user)]


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="/")


def _binding(request: Request) -> str:
    return request.cookies.get(sessions.SESSION_COOKIE) or request.cookies.get(PRESESSION_COOKIE) or ""


def csrf_token_for(secret_key: bytes, binding: str) -> str:
    """HMAC of the session (or pre-session) cookie: a page's forms carry it, an attacker's
    page cannot read it, and it changes with every login."""
    return hmac.new(secret_key, f"csrf:{binding}".encode(), hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    binding = _binding(request) or getattr(request.state, "presession", "")
    if not binding:
        return ""
    return csrf_token_for(context_of(request).signer.secret_key, binding)


def ensure_presession(request: Request, response: Response) -> None:
    """Give a logged-out browser the cookie its login/signup form's CSRF token is bound to."""
    if _binding(request):
        return
    value = getattr(request.state, "presession", "") or secrets.token_urlsafe(24)
    request.state.presession = value
    response.set_cookie(
        PRESESSION_COOKIE, value, httponly=True, samesite="lax",
        secure=context_of(request).settings.public_url.startswith("https://"), path="/",
    )


def new_presession(request: Request) -> None:
    """Called before rendering a logged-out form: the token is computed from this value and
    the same value is then set as the cookie by `ensure_presession`."""
    if not _binding(request):
        request.state.presession = secrets.token_urlsafe(24)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    if not origin:
        return False
    parts = urlsplit(origin)
    own = {
        urlsplit(context_of(request).settings.public_url).netloc,
        request.headers.get("host", ""),
    }
    return parts.scheme in ("http", "https") and parts.netloc in own


def check_csrf(request: Request, submitted: str | None) -> None:
    """Raise CsrfRejected unless `submitted` (form field or header) is this session's token."""
    binding = _binding(request)
    if not binding or not submitted:
        raise CsrfRejected()
    expected = csrf_token_for(context_of(request).signer.secret_key, binding)
    if not hmac.compare_digest(expected, submitted):
        raise CsrfRejected()


def check_cookie_request(request: Request) -> None:
    """For the cookie-authenticated JSON endpoints (/api/keys, /auth/logout): an
    `X-CSRF-Token` header with the session's token, or an Origin/Referer of this service."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        check_csrf(request, header)
    elif not _same_origin(request):
        raise CsrfRejected()
