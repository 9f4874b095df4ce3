"""Section 1: the gateway under 50 concurrent clients: GET /healthz (the floor of the HTTP
stack), GET /api/v1/jobs/{id} (a finished job, with a Bearer key) and POST
/api/v1/lipsync-image (submissions whose media answer 404, so each job fails fast)."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from tests.bench.http_load import LoadResult, RequestSpec, run_load
from tests.e2e.mesh import Mesh
from tests.servers import MediaServer

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class GatewayResults:
    healthz: LoadResult
    status: LoadResult
    submit: LoadResult
    drain_s: float | None     # time for the orchestrator to finish the submitted jobs
    load_avg: float           # the machine's 1-minute load average before the first load


def finished_job(mesh: Mesh, media: MediaServer, key: str) -> str:
    """A completed short job whose status the load reads."""
    form = {"image": f"{media.url}/portrait_photo_b.png", "audio": f"{media.url}/speech_en_3.wav"}
    with mesh.client(key) as client:
        answer = client.post("/api/v1/lipsync-image", json={"formState": form})
        answer.raise_for_status()
    job_id = str(answer.json()["id"])
    job = mesh.wait_job(job_id, key, timeout_s=600)
    if job["status"] != "completed":
        log.warning("the status target job ended %s: %s", job["status"], job.get("error"))
    return job_id


def wait_drained(mesh: Mesh, media: MediaServer, key: str, timeout_s: float = DRAIN_TIMEOUT_S) -> float | None:
    """Seconds until the orchestrator has worked through the queue (None on timeout): a
    sentinel job submitted last is final only once those before it are, since the work
    queue is consumed in order. It reads the job's live status, not the settled row."""
    started = time.perf_counter()
    with mesh.client(key) as client:
        answer = client.post("/api/v1/lipsync-image", json={"formState": _failing_form(media, 0)})
        answer.raise_for_status()
    try:
        mesh.wait_job(str(answer.json()["id"]), key, timeout_s=timeout_s)
    except AssertionError:
        return None
    return time.perf_counter() - started


def _failing_form(media: MediaServer, n: int) -> dict[str, str]:
    # Distinct URLs per request, so nothing upstream can answer from a cache.
    return {"image": f"{media.url}/status/404?n={n}", "audio": f"{media.url}/status/404?n={n}"}


def run_gateway(mesh: Mesh, media: MediaServer, key: str, concurrency: int, duration_s: float) -> GatewayResults:
    auth = {"Authorization": f"Bearer {key}"}
    job_id = finished_job(mesh, media, key)
    load_avg = os.getloadavg()[0]
    healthz = run_load(mesh.url, "GET /healthz", lambda _n: RequestSpec("GET", "/healthz"),
                       concurrency, duration_s)
    status = run_load(mesh.url, "GET /api/v1/jobs/{id}",
                      lambda _n: RequestSpec("GET", f"/api/v1/jobs/{job_id}", headers=auth),
                      concurrency, duration_s)

    def submission(n: int) -> RequestSpec:
        return RequestSpec("POST", "/api/v1/lipsync-image", json={"formState": _failing_form(media, n)},
                           headers=auth)

    submit = run_load(mesh.url, "POST /api/v1/lipsync-image", submission, concurrency, duration_s)
    drain_s = wait_drained(mesh, media, key)
    return GatewayResults(healthz=healthz, status=status, submit=submit, drain_s=drain_s, load_avg=load_avg)
