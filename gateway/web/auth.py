"""Sign up, log in, log out and the language switch. Login is one call to the API's own
`log_in` (password check, throttling, session start), so both doors share one path."""
from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from gateway.accounts import logins, sessions, users
from gateway.api.account import _safe_next, log_in, set_session_cookie
from gateway.api.errors import ApiError
from gateway.web.i18n import LANG_COOKIE, LANGUAGES, locale_for
from gateway.web.render import error_page, render
from gateway.web.security import check_csrf, context_of, session_user
from proto.vocabulary import ErrorCode

router = APIRouter(include_in_schema=False)

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
LANG_COOKIE_MAX_AGE_S = 365 * 24 * 3600

FormText = Annotated[str, Form()]


def _dashboard_target(next_path: str) -> str:
    return _safe_next(next_path) or "/keys"


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:  # noqa: A002
    if await session_user(request) is not None:
        return RedirectResponse(_dashboard_target(next), status_code=303)
    return render(request, "login.html", None, title="Log in", next=next, email="")


@router.post("/login")
async def login_form(
    request: Request, email: FormText = "", password: FormText = "",
    csrf_token: FormText = "", next: FormText = "",  # noqa: A002
) -> Response:
    check_csrf(request, csrf_token)
    ctx = context_of(request)
    client = request.client.host if request.client else "unknown"
    try:
        _account, token = await log_in(ctx, email, password[:MAX_PASSWORD_LENGTH], client)
    except ApiError as exc:
        page = render(request, "login.html", None, status_code=exc.status_code, title="Log in",
                      next=next, email=email, error=_refusal_text(request, exc))
        page.headers.update(exc.headers or {})
        return page
    response = RedirectResponse(_dashboard_target(next), status_code=303)
    set_session_cookie(ctx, response, token)
    return response


def _refusal_text(request: Request, exc: ApiError) -> str:
    """The form's error line; a 429 says how long to wait, in the page's language."""
    if exc.status_code != 429:
        return exc.message
    wait_s = int((exc.headers or {}).get("Retry-After", "60"))
    return locale_for(request).gettext("throttled").format(minutes=max(1, -(-wait_s // 60)))


SIGNUP_CLOSED = "Sign-up is closed on this server; ask its operator for an account."


@router.get("/signup")
async def signup_page(request: Request) -> Response:
    if await session_user(request) is not None:
        return RedirectResponse("/keys", status_code=303)
    if not context_of(request).settings.signup_enabled:
        return error_page(request, 403, "Sign up", SIGNUP_CLOSED)
    return render(request, "signup.html", None, title="Sign up", email="")


@router.post("/signup")
async def signup_form(
    request: Request, email: FormText = "", password: FormText = "", csrf_token: FormText = ""
) -> Response:
    check_csrf(request, csrf_token)
    ctx = context_of(request)
    settings = ctx.settings
    if not settings.signup_enabled:
        return error_page(request, 403, "Sign up", SIGNUP_CLOSED)
    problem = None
    if not EMAIL_PATTERN.fullmatch(email.strip()) or len(email) > 320:
        problem = "Enter a valid email address"
    elif not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        problem = "The password must have at least 8 characters"
    if problem:
        return render(request, "signup.html", None, status_code=422, title="Sign up",
                      email=email, error=problem)
    plan = settings.plans[settings.default_plan]
    grant = logins.NewAccount(settings.default_plan, plan.api_credits_grant, plan.app_credits_grant)
    try:
        created = await logins.sign_up(
            ctx.db, ctx.password_checks, ctx.login_policy, email=email, password=password,
            client_ip=request.client.host if request.client else "unknown",
            grant=grant, session_ttl_s=settings.session_ttl_s,
        )
    except logins.LoginThrottled as exc:
        throttled = ApiError(429, ErrorCode.RATE_LIMITED, exc.reason,
                             headers={"Retry-After": str(exc.retry_after_s)})
        page = render(request, "signup.html", None, status_code=429, title="Sign up",
                      email=email, error=_refusal_text(request, throttled))
        page.headers.update(throttled.headers or {})
        return page
    except users.AccountExistsError:
        return render(request, "signup.html", None, status_code=409, title="Sign up",
                      email=email, error="An account with this email already exists")
    response = RedirectResponse("/keys", status_code=303)
    set_session_cookie(ctx, response, created.session_token)
    return response


@router.post("/logout")
async def logout_form(request: Request, csrf_token: FormText = "") -> Response:
    token = request.cookies.get(sessions.SESSION_COOKIE)
    if token:
        check_csrf(request, csrf_token)
        await context_of(request).db.run_async(lambda s: sessions.end_session(s, token))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(sessions.SESSION_COOKIE, path="/")
    return response


@router.get("/lang")
async def switch_language(lang: str = "en", next: str = "/") -> Response:  # noqa: A002
    response = RedirectResponse(_safe_next(next) or "/", status_code=303)
    if lang in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=LANG_COOKIE_MAX_AGE_S, samesite="lax", path="/")
    return response
