"""The webhook body: the orchestrator's `JobRecord` (its JobRequest plus the job's final
JobStatus) rendered by the shared builder in proto/jobobject.py, the same one that answers
GET /api/v1/jobs/{id}."""
from __future__ import annotations

from proto import lipsync_pb2
from proto.jobobject import JobRecord
from proto.jobobject import job_body as render_body
from proto.urlsign import UrlSigner


def job_record(request: lipsync_pb2.JobRequest, status: lipsync_pb2.JobStatus) -> JobRecord:
    return JobRecord.from_status(
        status,
        id=request.job_id,
        model=request.model,
        seed=request.seed,
        form_state_json=request.form_state_json,
        created_at_ms=request.created_at_ms,
        progress=status.progress,
        stage=status.stage,
    )


def job_body(request: lipsync_pb2.JobRequest, status: lipsync_pb2.JobStatus, signer: UrlSigner,
             url_ttl_s: int, retention_s: float | None = None) -> bytes:
    """retention_s: how long outputs are kept (the link in the body never outlives the file)."""
    return render_body(job_record(request, status), signer, url_ttl_s, retention_s=retention_s)
