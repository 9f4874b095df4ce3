"""Prometheus metrics the gateway exports on /metrics."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

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
