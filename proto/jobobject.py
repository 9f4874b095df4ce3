"""The job object of SPEC section 3, built in one place for both of its readers: the gateway's
`GET /api/v1/jobs/{id}` (from the database row and the live status bucket) and the webhook
body (built by the orchestrator from the JobRequest and its final JobStatus). Each side fills
a `JobRecord`; `job_object` alone decides what the customer sees, so the two cannot drift.

Rules: a completed job has `output`/`outputs` (one signed URL, expiry rounded up to the hour,
so GET and webhook made in the same hour carry the same link) and `expires_at`, `progress`
1.0 and stage "done"; a failed or canceled job has progress 0.0 and stage "done", and a
canceled one always carries `error_code: "canceled"`; `error` is set only when failed.
Times are ISO 8601 UTC with milliseconds, computed from integer milliseconds."""
from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from proto import lipsync_pb2
from proto.urlsign import UrlSigner
from proto.vocabulary import ErrorCode, JobStatus

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


_Outcome = TypeVar("_Outcome", bound="JobOutcome")


@dataclass(frozen=True, kw_only=True)
class JobOutcome:
    """Where a job stands or how it ended: the part of a job that a JobStatus message reports
    (`from_status`, the one reading of those fields), for the job object and for settlement."""

    status: str
    output_key: str = ""
    error: str = ""
    error_code: str = ""
    execution_time_ms: int | None = None
    timings_ms: Mapping[str, int] = field(default_factory=dict)
    completed_at_ms: int | None = None
    # What the service measured on its own output (quality_object), when completed.
    quality: Mapping[str, Any] | None = None

    @classmethod
    def from_status(cls: type[_Outcome], status: lipsync_pb2.JobStatus, **more: Any) -> _Outcome:
        """This type from a JobStatus (zero numbers read as absent), `more` fields added."""
        return cls(**outcome_fields(status), **more)


def outcome_fields(status: lipsync_pb2.JobStatus) -> dict[str, Any]:
    """JobOutcome's fields as a JobStatus reports them (for `dataclasses.replace` too)."""
    return {
        "status": status.status,
        "output_key": status.output_key,
        "error": status.error,
        "error_code": status.error_code,
        "execution_time_ms": status.execution_time_ms or None,
        "timings_ms": dict(status.timings_ms),
        "completed_at_ms": status.completed_at_ms or None,
        "quality": quality_object(status),
    }


@dataclass(frozen=True, kw_only=True)
class JobRecord(JobOutcome):
    """What is known about one job, from whichever side reads it."""

    id: str
    model: str
    seed: int
    form_state_json: str
    created_at_ms: int
    progress: float = 0.0
    stage: str = ""


def ms_from_datetime(value: dt.datetime) -> int:
    """Integer milliseconds since the epoch (naive datetimes are UTC), truncated, no floats."""
    aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    delta = aware - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def datetime_from_ms(ms: int) -> dt.datetime:
    """The naive UTC datetime of `ms` milliseconds since the epoch (exact, no floats)."""
    return (_EPOCH + dt.timedelta(milliseconds=ms)).replace(tzinfo=None)


def iso_from_ms(ms: int | None) -> str | None:
    if not ms:
        return None
    moment = _EPOCH + dt.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def quality_object(status: lipsync_pb2.JobStatus) -> dict[str, Any] | None:
    """The job object's `quality` value from a JobStatus's `quality` message (None until the
    job measured its output): sync offset in frames and its confidence, faces found / frames."""
    if not status.HasField("quality"):
        return None
    q = status.quality
    return {"sync_offset_frames": q.sync_offset_frames, "sync_confidence": round(q.sync_confidence, 4),
            "faces_found": q.faces_found, "frames": q.frames}


def output_expired_at_ms(record: JobRecord, retention_s: float | None, now_s: float | None) -> int | None:
    """When the output's file was (or will be) removed by the expiry sweep, if that moment
    has passed: the file is written just before the job completes and swept `retention_s`
    after it was written. None while the output is still kept (or retention is unknown)."""
    if retention_s is None or not record.completed_at_ms:
        return None
    ends_ms = record.completed_at_ms + int(retention_s * 1000)
    now_ms = int((time.time() if now_s is None else now_s) * 1000)
    return ends_ms if now_ms >= ends_ms else None


def job_object(
    record: JobRecord, signer: UrlSigner, url_ttl_s: int, now_s: float | None = None,
    *, retention_s: float | None = None,
) -> dict[str, Any]:
    """`retention_s` (the gateway's reading): a completed job whose output has been swept
    for expiry has `output`/`outputs` null and `expires_at` the moment it expired, never a
    signed link to a file that is gone."""
    status = JobStatus(record.status)
    completed = status is JobStatus.COMPLETED
    output = expires_at = None
    expired_ms = output_expired_at_ms(record, retention_s, now_s) if completed else None
    if expired_ms is not None:
        expires_at = iso_from_ms(expired_ms)
    elif completed and record.output_key:
        # Never a link that outlives the file: the expiry sweep removes it retention_s after completion.
        kept_until_s = (record.completed_at_ms / 1000 + retention_s
                        if retention_s is not None and record.completed_at_ms else None)
        signed = signer.sign(record.output_key, url_ttl_s, now_s, not_after_s=kept_until_s)
        output = signed.url
        expires_at = iso_from_ms(ms_from_datetime(signed.expires_at))
    if status is JobStatus.PROCESSING:
        progress, stage = record.progress, record.stage or "queued"
    else:
        progress, stage = (1.0 if completed else 0.0), "done"
    error_code = record.error_code or (ErrorCode.CANCELED.value if status is JobStatus.CANCELED else "")
    return {
        "id": record.id,
        "model": record.model,
        "status": status.value,
        "output": output,
        "outputs": [output] if output else None,
        "error": record.error if status is JobStatus.FAILED else "",
        "error_code": error_code or None,
        "executionTime": record.execution_time_ms if completed else None,
        "timings": (dict(record.timings_ms) or None) if completed else None,
        "progress": progress,
        "stage": stage,
        "seed": record.seed,
        "created_at": iso_from_ms(record.created_at_ms),
        "completed_at": iso_from_ms(record.completed_at_ms) if status.is_terminal else None,
        "expires_at": expires_at,
        "formState": json.loads(record.form_state_json) if record.form_state_json else {},
        "quality": dict(record.quality) if completed and record.quality else None,
    }


def job_body(record: JobRecord, signer: UrlSigner, url_ttl_s: int, now_s: float | None = None,
             *, retention_s: float | None = None) -> bytes:
    """The job object as compact JSON bytes (the webhook body)."""
    return json.dumps(job_object(record, signer, url_ttl_s, now_s, retention_s=retention_s),
                      separators=(",", ":")).encode()
