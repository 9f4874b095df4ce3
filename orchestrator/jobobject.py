"""The webhook body: the orchestrator's `JobRecord` (its JobRequest plus the job's final
JobStatus) rendered by the shared builder in proto/jobobject.py, the same one that answers
GET /api/v1/jobs/{id}."""
from __future__ import annotations

from proto import lipsync_pb2
from proto.jobobject import JobRecord, quality_object
from proto.jobobject import job_body as render_body
from proto.urlsign import UrlSigner


def job_record(request: lipsync_pb2.JobRequest, status: lipsync_pb2.JobStatus) -> JobRecord:
    return JobRecord(
        id=request.job_id,
        model=request.model,
        status=status.status,
        seed=request.seed,
        form_state_json=request.form_state_json,
        created_at_ms=request.created_at_ms,
        output_key=status.output_key,
        error=status.error,
        error_code=status.error_code,
        execution_time_ms=status.execution_time_ms or None,
        timings_ms=dict(status.timings_ms),
        completed_at_ms=status.completed_at_ms or None,
        progress=status.progress,
        stage=status.stage,
        quality=quality_object(status),
    )


def job_body(request: lipsync_pb2.JobRequest, status: lipsync_pb2.JobStatus, signer: UrlSigner,
             url_ttl_s: int) -> bytes:
    return render_body(job_record(request, status), signer, url_ttl_s)
