"""Liveness, readiness and metrics. Ready means: NATS connected, and Triton up with the
three stage models loaded (checked over Triton's HTTP API)."""
from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import Ctx

router = APIRouter(include_in_schema=False)

STAGE_MODELS = ("audio_features", "face_detection", "generator")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _ready(client: httpx.AsyncClient, path: str) -> bool:
    try:
        response = await client.get(path)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@router.get("/readyz")
async def readyz(ctx: Ctx) -> JSONResponse:
    async with httpx.AsyncClient(
        base_url=ctx.settings.triton_http_url, timeout=ctx.settings.triton_ready_timeout_s
    ) as client:
        server, *models = await asyncio.gather(
            _ready(client, "/v2/health/ready"),
            *(_ready(client, f"/v2/models/{name}/ready") for name in STAGE_MODELS),
        )
    checks: dict[str, Any] = {
        "nats": ctx.bus.ready,
        "triton": server,
        "models": dict(zip(STAGE_MODELS, models)),
    }
    not_ready = [name for name in ("nats", "triton") if not checks[name]]
    not_ready += [f"model {name}" for name, ok in checks["models"].items() if not ok]
    body = {"ready": not not_ready, "not_ready": not_ready, "checks": checks}
    return JSONResponse(body, status_code=200 if not not_ready else 503)


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
