"""Liveness, readiness and metrics. Ready means what the gateway itself needs to serve
submissions, polling and downloads: NATS connected and the database answering. Triton's
health (the server and the three stage models) is reported separately at /readyz/stages,
so a Triton outage does not take the gateways out of their Service."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from gateway.api.deps import Ctx
from proto.stages import STAGE_MODELS

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _select_one(connection: Connection) -> bool:
    return connection.execute(text("SELECT 1")).scalar() == 1


async def _database_ready(ctx: Ctx) -> bool:
    try:
        return await asyncio.wait_for(ctx.db.read_async(_select_one), ctx.settings.nats_timeout_s)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("readiness: database not answering: %s", exc)
        return False


@router.get("/readyz")
async def readyz(ctx: Ctx) -> JSONResponse:
    checks: dict[str, Any] = {"nats": ctx.bus.ready, "database": await _database_ready(ctx)}
    not_ready = [name for name, ok in checks.items() if not ok]
    body = {"ready": not not_ready, "not_ready": not_ready, "checks": checks}
    return JSONResponse(body, status_code=200 if not not_ready else 503)


async def _ready(client: httpx.AsyncClient, path: str) -> bool:
    try:
        response = await client.get(path)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@router.get("/readyz/stages")
async def stages_ready(ctx: Ctx) -> JSONResponse:
    """Triton up with the three stage models loaded (Triton's HTTP API); 503 otherwise."""
    async with httpx.AsyncClient(
        base_url=ctx.settings.triton_http_url, timeout=ctx.settings.triton_ready_timeout_s
    ) as client:
        server, *models = await asyncio.gather(
            _ready(client, "/v2/health/ready"),
            *(_ready(client, f"/v2/models/{name}/ready") for name in STAGE_MODELS),
        )
    checks: dict[str, Any] = {"triton": server, "models": dict(zip(STAGE_MODELS, models, strict=True))}
    not_ready = [] if server else ["triton"]
    not_ready += [f"model {name}" for name, ok in checks["models"].items() if not ok]
    body = {"ready": not not_ready, "not_ready": not_ready, "checks": checks}
    return JSONResponse(body, status_code=200 if not not_ready else 503)


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
