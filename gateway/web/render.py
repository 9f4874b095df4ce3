"""Rendering a dashboard page: the Jinja2 environment (autoescaped), the values every page
gets (user, language, CSRF token, API reference link) and the HTML error pages."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from gateway.accounts.principal import Principal
from gateway.web import security
from gateway.web.i18n import locale_for

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

# Pages load nothing from elsewhere and cannot be framed; media (the result video) is ours.
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self'; "
    "img-src 'self' data:; media-src 'self'; form-action 'self'; frame-ancestors 'none'"
)

NAVIGATION = (
    ("/keys", "API keys"),
    ("/credits", "Credits"),
    ("/jobs", "Jobs"),
    ("/playground", "Playground"),
    ("/webhooks", "Webhooks"),
    ("/docs/quickstart", "Quickstart"),
)


def render(
    request: Request,
    template: str,
    user: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    locale = locale_for(request)
    if user is None:
        security.new_presession(request)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "user": user,
            "locale": locale,
            "_": locale.gettext,
            "csrf_token": security.csrf_token(request),
            "navigation": NAVIGATION,
            "current_path": request.url.path,
            "base_url": security.context_of(request).settings.public_url,
            **context,
        },
        status_code=status_code,
    )
    if user is None:
        security.ensure_presession(request, response)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


def error_page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", None, status_code=status_code, title=title, message=message)
