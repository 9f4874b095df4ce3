"""The job vocabulary shared by the gateway, the orchestrator and the media packages: job
statuses, stable error codes, model names and output resolutions. The values are the exact
strings of SPEC section 3 (they travel in JSON bodies, database rows and protobuf string
fields), so each enum is a `str` subclass whose members compare equal to those strings."""
from __future__ import annotations

from enum import Enum


class _Word(str, Enum):
    """A string enum that prints (str, format, f-strings) as its bare value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)

    __hash__ = str.__hash__  # Enum hashes the member name: "480p" in a set must find P480


class JobStatus(_Word):
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        """A finished job: its row and status never change again."""
        return self is not JobStatus.PROCESSING


TERMINAL_STATUSES = frozenset(s.value for s in JobStatus if s.is_terminal)


def is_terminal(status: str) -> bool:
    """True for completed, failed and canceled (plain strings accepted, unknown ones are not)."""
    return status in TERMINAL_STATUSES


class ErrorCode(_Word):
    """Every stable `error_code` the service answers with or fails a job with."""

    # Jobs: the submitter's media or account (the job fails, nothing is charged).
    AUDIO_TOO_LONG = "audio_too_long"
    DOWNLOAD_FAILED = "download_failed"
    DOWNLOAD_TIMEOUT = "download_timeout"
    EMPTY_AUDIO = "empty_audio"
    EMPTY_MEDIA = "empty_media"
    FACE_NOT_FOUND = "face_not_found"
    FACE_TOO_SMALL = "face_too_small"
    IMAGE_TOO_LARGE = "image_too_large"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    MEDIA_TOO_LARGE = "media_too_large"
    NO_AUDIO_STREAM = "no_audio_stream"
    TWO_FACES_REQUIRED = "two_faces_required"
    UNSUPPORTED_MEDIA = "unsupported_media"
    URL_NOT_ALLOWED = "url_not_allowed"
    VIDEO_TOO_LONG = "video_too_long"
    VIDEO_TOO_LARGE = "video_too_large"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELED = "canceled"
    INTERNAL_ERROR = "internal_error"
    # Billing requests on the bus.
    BAD_REQUEST = "bad_request"
    UNKNOWN_JOB = "unknown_job"
    # HTTP answers of the API (the generic ones answer Starlette's own HTTP errors).
    CONFLICT = "conflict"
    ERROR = "error"
    FORBIDDEN = "forbidden"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    INVALID_CREDENTIALS = "invalid_credentials"
    INVALID_REQUEST = "invalid_request"
    INVALID_SIGNATURE = "invalid_signature"
    JOB_NOT_CANCELABLE = "job_not_cancelable"
    NOT_FOUND = "not_found"
    NO_OUTPUT = "no_output"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    RESOLUTION_NOT_ALLOWED = "resolution_not_allowed"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INSUFFICIENT_STORAGE = "insufficient_storage"
    TOO_MANY_CONCURRENT_JOBS = "too_many_concurrent_jobs"
    UNAUTHORIZED = "unauthorized"


class Model(_Word):
    VIDEO = "lipsync-video"
    IMAGE = "lipsync-image"
    IMAGE_MULTI = "lipsync-image-multi"


MODELS: tuple[str, ...] = tuple(m.value for m in Model)


class Resolution(_Word):
    P480 = "480p"
    P720 = "720p"

    @property
    def short_side(self) -> int:
        """Pixels of the output's short side."""
        return int(self.value.rstrip("p"))


RESOLUTIONS: tuple[str, ...] = tuple(r.value for r in Resolution)
DEFAULT_RESOLUTION = Resolution.P480
