"""Wiring the dashboard into the app: its routers, static files and the two answers its
security checks need (a redirect to /login, a 403 for a failed CSRF check)."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from gateway.web import auth, credits, docs, jobs, keys, webhooks
from gateway.web.render import STATIC_DIR, error_page
from gateway.web.security import CsrfRejected, LoginRequired, login_url

CSRF_MESSAGE = "The form expired or did not come from this page. Reload the page and try again."


async def _login_required(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(login_url(exc.next_path), status_code=303)


async def _csrf_rejected(request: Request, _exc: Exception) -> Response:
    if request.url.path.startswith(("/api/", "/auth/")):
        return JSONResponse(
            {"error": "Missing or wrong CSRF token (send X-CSRF-Token or a same-origin Origin)",
             "error_code": "csrf_failed"},
            status_code=403,
        )
    return error_page(request, 403, "Forbidden", CSRF_MESSAGE)


def install_dashboard(app: FastAPI) -> None:
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(CsrfRejected, _csrf_rejected)
    app.mount("/static/web", StaticFiles(directory=STATIC_DIR), name="web-static")
    docs.install(app)
    for module in (auth, keys, credits, jobs, webhooks):
        app.include_router(module.router)
