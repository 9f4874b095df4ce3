"""The gateway application: `create_app` wires settings, database, job bus and routes; the
lifespan migrates the database, then connects to NATS and starts the events consumer and
the billing responder."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from gateway import deliveries, files
from gateway.api import account, health, uploads
from gateway.api import jobs as job_routes
from gateway.api.bodylimit import BodyLimit
from gateway.api.deps import document_bearer_auth
from gateway.api.errors import install_error_handlers
from gateway.billing.settlement import Outcome, finalize, raise_reservation, settle
from gateway.context import GatewayContext
from gateway.metrics import JOBS_SETTLED, RESERVATIONS, ObserveRequests
from gateway.settings import Settings
from gateway.upkeep import reap_periodically
from gateway.web.dashboard import install_dashboard
from proto import lipsync_pb2

log = logging.getLogger(__name__)


def _event_handler(ctx: GatewayContext) -> Callable[[lipsync_pb2.JobEvent], Awaitable[None]]:
    async def on_event(event: lipsync_pb2.JobEvent) -> None:
        outcome = Outcome.from_status(event.status)
        changed = await ctx.db.run_async(
            lambda s: settle(s, ctx.prices, event.status.job_id, outcome)
        )
        if changed:
            JOBS_SETTLED.labels(status=outcome.status).inc()
            log.info("job %s settled as %s", event.status.job_id, outcome.status)

    return on_event


def _reserve_handler(
    ctx: GatewayContext,
) -> Callable[[lipsync_pb2.ReserveRequest], Awaitable[lipsync_pb2.ReserveReply]]:
    async def on_reserve(request: lipsync_pb2.ReserveRequest) -> lipsync_pb2.ReserveReply:
        reply = await ctx.db.run_async(lambda s: raise_reservation(s, ctx.prices, request))
        RESERVATIONS.labels(result="ok" if reply.ok else reply.error_code).inc()
        return reply

    return on_reserve


def _finalize_handler(
    ctx: GatewayContext,
) -> Callable[[lipsync_pb2.JobEvent], Awaitable[lipsync_pb2.ReserveReply]]:
    async def on_finalize(event: lipsync_pb2.JobEvent) -> lipsync_pb2.ReserveReply:
        outcome = Outcome.from_status(event.status)
        reply = await ctx.db.run_async(
            lambda s: finalize(s, ctx.prices, outcome, event.status.job_id)
        )
        if reply.ok:
            JOBS_SETTLED.labels(status=outcome.status).inc()
        log.info("job %s finalize as %s: %s", event.status.job_id, outcome.status,
                 "recorded" if reply.ok else f"lost to {reply.error_code}")
        return reply

    return on_finalize
def _attempt_handler(
    ctx: GatewayContext,
) -> Callable[[lipsync_pb2.WebhookAttempt], Awaitable[None]]:
    async def on_attempt(report: lipsync_pb2.WebhookAttempt) -> None:
        await ctx.db.run_async(lambda s: deliveries.store_attempt(s, report))

    return on_attempt


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    ctx: GatewayContext = app.state.gateway
    await run_in_threadpool(ctx.db.migrate)
    ctx.settings.storage_path.mkdir(parents=True, exist_ok=True)
    await run_in_threadpool(ctx.storage.check)  # e.g. an S3 bucket that does not exist
    await ctx.bus.start(_event_handler(ctx), _reserve_handler(ctx), _finalize_handler(ctx),
                        _attempt_handler(ctx))
    stop_reaper = asyncio.Event()
    reaper = asyncio.create_task(reap_periodically(ctx, stop_reaper))
    try:
        yield
    finally:
        stop_reaper.set()
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        await ctx.bus.close()
        ctx.db.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="lipsyncd",
        version="0.1.0",
        summary="Self-hosted lip-sync video REST API",
        lifespan=_lifespan,
        # Some clients of the hosted APIs send a JSON body with no Content-Type at all.
        strict_content_type=False,
        # Served by the dashboard from packaged files (gateway/web/docs.py), never a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = GatewayContext.build(settings)
    install_error_handlers(app)
    document_bearer_auth(app)
    app.add_middleware(ObserveRequests)
    # Added last, so outermost: nothing reads a byte of an over-size body.
    app.add_middleware(
        BodyLimit,
        max_json_bytes=settings.max_json_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    app.include_router(job_routes.router)
    app.include_router(uploads.router)
    app.include_router(account.router)
    app.include_router(health.router)
    app.include_router(files.router)
    install_dashboard(app)
    return app
