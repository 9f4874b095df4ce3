"""Prometheus metrics the gateway exports on /metrics, and the ASGI middleware that times
every HTTP request by method, route template and status."""
from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JOBS_SUBMITTED = Counter(
    "lipsyncd_gateway_jobs_submitted_total", "Jobs accepted", ["model", "credit_kind"]
)
JOBS_SETTLED = Counter(
    "lipsyncd_gateway_jobs_settled_total", "Jobs settled from job events", ["status"]
)
RESERVATIONS = Counter(
    "lipsyncd_gateway_reservation_requests_total", "Reservation raises answered", ["result"]
)
HTTP_REQUESTS = Histogram(
    "lipsyncd_gateway_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
)


class ObserveRequests:
    """Plain ASGI (no extra task or stream per request, unlike `BaseHTTPMiddleware`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_s = time.perf_counter()
        status = "500"  # unless a response starts: an exception escaped the app

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            route = scope.get("route")  # set by the router on this same scope dict
            HTTP_REQUESTS.labels(
                method=scope["method"], route=getattr(route, "path", "unmatched"), status=status
            ).observe(time.perf_counter() - started_s)
