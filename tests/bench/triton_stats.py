"""Triton's own account of the work it did: per-model counters from its statistics API
(`GET /v2/models/stats`), read before and after a job and subtracted."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

COMPUTE_PARTS = ("compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class ModelCounters:
    requests: int          # successful inference requests
    request_ns: int        # Triton's total time for them (queue + compute + its own handling)
    queue_ns: int
    compute_ns: int        # compute_input + compute_infer + compute_output

    def minus(self, earlier: "ModelCounters") -> "ModelCounters":
        return ModelCounters(self.requests - earlier.requests, self.request_ns - earlier.request_ns,
                             self.queue_ns - earlier.queue_ns, self.compute_ns - earlier.compute_ns)


Snapshot = dict[str, ModelCounters]


def parse_stats(body: dict[str, Any]) -> Snapshot:
    """Counters per model name (summed over versions) from a /v2/models/stats answer."""
    snapshot: Snapshot = {}
    for model in body.get("model_stats", []):
        stats = model.get("inference_stats", {})

        def ns(part: str, stats: dict[str, Any] = stats) -> int:
            return int(stats.get(part, {}).get("ns", 0))

        counters = ModelCounters(
            requests=int(stats.get("success", {}).get("count", 0)),
            request_ns=ns("success"),
            queue_ns=ns("queue"),
            compute_ns=sum(ns(part) for part in COMPUTE_PARTS),
        )
        name = str(model["name"])
        previous = snapshot.get(name)
        if previous is not None:
            counters = ModelCounters(previous.requests + counters.requests,
                                     previous.request_ns + counters.request_ns,
                                     previous.queue_ns + counters.queue_ns,
                                     previous.compute_ns + counters.compute_ns)
        snapshot[name] = counters
    return snapshot


def read_stats(http_url: str) -> Snapshot:
    response = httpx.get(f"{http_url.rstrip('/')}/v2/models/stats", timeout=10)
    response.raise_for_status()
    return parse_stats(response.json())


def difference(before: Snapshot, after: Snapshot) -> Snapshot:
    empty = ModelCounters(0, 0, 0, 0)
    return {name: counters.minus(before.get(name, empty)) for name, counters in after.items()}


def total_compute_s(delta: Snapshot) -> float:
    return sum(c.compute_ns for c in delta.values()) / 1e9


def total_request_s(delta: Snapshot) -> float:
    return sum(c.request_ns for c in delta.values()) / 1e9
