"""The API reference, offline: Swagger UI and ReDoc pages whose scripts and styles are
served by this service from the pinned `fastapi-offline` wheel (no CDN), the quickstart
filled with this server's base URL, and `/` sending a browser to the dashboard."""
from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from gateway.web.render import render
from gateway.web.security import WebUser, context_of, session_user

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/static/apidocs"

# Everything from this service: ReDoc's sidebar links a logo on a CDN, which this stops.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def front_door(request: Request) -> RedirectResponse:
    user = await session_user(request)
    return RedirectResponse("/jobs" if user else "/login", status_code=303)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="lipsyncd API reference",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    page = get_redoc_html(
        openapi_url="/openapi.json",
        title="lipsyncd API reference",
        redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@router.get("/docs/quickstart")
async def quickstart(request: Request, user: WebUser) -> HTMLResponse:
    settings = context_of(request).settings
    free = settings.plans.get("free")
    return render(
        request, "quickstart.html", user, title="Quickstart",
        free_max_resolution=free.max_resolution if free else None,
        allow_private=settings.allow_private_urls,
    )


def install(app: FastAPI) -> None:
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="apidocs-static")
    app.include_router(router)
