"""The NATS JetStream topology both services agree on: stream, subject, bucket and consumer
names, and the idempotent provisioning that either side runs at start."""
from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import (
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

log = logging.getLogger(__name__)

JOBS_STREAM = "LIPSYNCD_JOBS"
JOBS_SUBJECT_PREFIX = "lipsyncd.jobs"          # lipsyncd.jobs.<model>
EVENTS_STREAM = "LIPSYNCD_EVENTS"
EVENTS_SUBJECT_PREFIX = "lipsyncd.events"      # lipsyncd.events.<job_id>
WEBHOOKS_STREAM = "LIPSYNCD_WEBHOOKS"
WEBHOOKS_SUBJECT_PREFIX = "lipsyncd.webhooks"  # lipsyncd.webhooks.<job_id>
WEBHOOK_ATTEMPTS_STREAM = "LIPSYNCD_WEBHOOK_ATTEMPTS"
WEBHOOK_ATTEMPTS_SUBJECT_PREFIX = "lipsyncd.webhook_attempts"  # lipsyncd.webhook_attempts.<job_id>
BILLING_RESERVE_SUBJECT = "lipsyncd.billing.reserve"
STATUS_BUCKET = "lipsyncd_status"              # job id -> JobStatus (protobuf)
CONTROL_BUCKET = "lipsyncd_control"            # "cancel.<job_id>" -> b"1"

ORCHESTRATOR_CONSUMER = "orchestrator"
GATEWAY_EVENTS_CONSUMER = "gateway-settle"
WEBHOOK_CONSUMER = "webhook-sender"
GATEWAY_WEBHOOK_ATTEMPTS_CONSUMER = "gateway-webhook-attempts"

# Events and statuses are kept long enough for a gateway that was down to catch up.
EVENTS_MAX_AGE_S = 7 * 24 * 3600
STATUS_TTL_S = 7 * 24 * 3600
DUPLICATE_WINDOW_S = 24 * 3600


def job_subject(model: str) -> str:
    return f"{JOBS_SUBJECT_PREFIX}.{model}"


def event_subject(job_id: str) -> str:
    return f"{EVENTS_SUBJECT_PREFIX}.{job_id}"


def webhook_subject(job_id: str) -> str:
    return f"{WEBHOOKS_SUBJECT_PREFIX}.{job_id}"


def webhook_attempt_subject(job_id: str) -> str:
    return f"{WEBHOOK_ATTEMPTS_SUBJECT_PREFIX}.{job_id}"


def cancel_key(job_id: str) -> str:
    return f"cancel.{job_id}"


async def ensure_topology(js: JetStreamContext) -> None:
    """Create the streams and buckets if missing; leaves existing ones as they are."""
    streams = [
        StreamConfig(
            name=JOBS_STREAM,
            subjects=[f"{JOBS_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=[f"{EVENTS_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=EVENTS_MAX_AGE_S,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=WEBHOOKS_STREAM,
            subjects=[f"{WEBHOOKS_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=WEBHOOK_ATTEMPTS_STREAM,
            subjects=[f"{WEBHOOK_ATTEMPTS_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=EVENTS_MAX_AGE_S,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
    ]
    for config in streams:
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
                log.info("created stream %s", config.name)
            except BadRequestError as exc:  # another service created it meanwhile
                log.info("stream %s already being created: %s", config.name, exc)
    for bucket, ttl_s in ((STATUS_BUCKET, STATUS_TTL_S), (CONTROL_BUCKET, STATUS_TTL_S)):
        try:
            await js.key_value(bucket)
        except (NotFoundError, BadRequestError):
            await js.create_key_value(
                KeyValueConfig(bucket=bucket, ttl=ttl_s, storage=StorageType.FILE, history=1)
            )
            log.info("created bucket %s", bucket)
