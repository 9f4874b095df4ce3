"""The job object of SPEC section 3 as the orchestrator sends it in webhooks (the gateway
renders the same shape for GET /api/v1/jobs/{id})."""
from __future__ import annotations

import json
import time

from orchestrator.quality import as_json as quality_json
from postprocess.storage import sign_url
from proto import lipsync_pb2

OUTPUT_URL_TTL_S = 7 * 24 * 3600


def job_object(request: lipsync_pb2.JobRequest, status: lipsync_pb2.JobStatus, base_url: str,
               secret_key: bytes) -> dict[str, object]:
    completed = status.status == "completed"
    output = None
    if completed and status.output_key:
        output = sign_url(base_url, status.output_key, secret_key, int(time.time()) + OUTPUT_URL_TTL_S)
    return {
        "id": request.job_id,
        "model": request.model,
        "status": status.status,
        "output": output,
        "error": status.error if status.status == "failed" else "",
        "executionTime": status.execution_time_ms if completed else None,
        "timings": dict(status.timings_ms) if completed else None,
        "error_code": status.error_code or None,
        "seed": request.seed,
        "progress": status.progress,
        "stage": status.stage,
        "created_at": _iso(request.created_at_ms),
        "completed_at": _iso(status.completed_at_ms),
        "quality": quality_json(status) if completed else None,
    }


def job_body(request: lipsync_pb2.JobRequest, status: lipsync_pb2.JobStatus, base_url: str,
             secret_key: bytes) -> bytes:
    return json.dumps(job_object(request, status, base_url, secret_key), separators=(",", ":")).encode()


def _iso(ms: int) -> str | None:
    if not ms:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
