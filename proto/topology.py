"""The NATS JetStream topology both services agree on: stream, subject, bucket and consumer
names, the idempotent provisioning that either side runs at start, each side's NATS user
permissions, and the HMAC that authenticates job events (the only messages that move
credits) with the secret key both sides share."""
from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping

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
BILLING_FINALIZE_SUBJECT = "lipsyncd.billing.finalize"  # JobEvent -> ReserveReply
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


# NATS users (`make serve` writes them into nats-server's config, see deploy/local/mesh.py):
# the gateway publishes jobs and cancel flags, reads statuses and consumes events; the
# orchestrator the reverse. Neither may reshape or empty the streams once they exist.
STREAM_ADMIN_DENY = ["$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>",
                     "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>"]
NATS_PERMISSIONS: dict[str, dict[str, dict[str, list[str]]]] = {
    "gateway": {
        "publish": {"allow": [f"{JOBS_SUBJECT_PREFIX}.>", f"$KV.{CONTROL_BUCKET}.>", "$JS.API.>",
                              f"$JS.ACK.{EVENTS_STREAM}.>", f"$JS.ACK.{WEBHOOK_ATTEMPTS_STREAM}.>", "_INBOX.>"],
                    "deny": STREAM_ADMIN_DENY},
        "subscribe": {"allow": ["_INBOX.>", BILLING_RESERVE_SUBJECT, BILLING_FINALIZE_SUBJECT]},
    },
    "orchestrator": {
        "publish": {"allow": [f"{EVENTS_SUBJECT_PREFIX}.>", f"{WEBHOOKS_SUBJECT_PREFIX}.>",
                              f"{WEBHOOK_ATTEMPTS_SUBJECT_PREFIX}.>",
                              f"$KV.{STATUS_BUCKET}.>", BILLING_RESERVE_SUBJECT, BILLING_FINALIZE_SUBJECT,
                              "$JS.API.>",
                              f"$JS.ACK.{JOBS_STREAM}.>", f"$JS.ACK.{WEBHOOKS_STREAM}.>"],
                    "deny": STREAM_ADMIN_DENY},
        "subscribe": {"allow": ["_INBOX.>"]},
    },
}

EVENT_SIGNATURE_HEADER = "Lipsyncd-Event-Signature"


def _event_key(secret_key: bytes) -> bytes:
    """A key of its own for events, derived from the shared secret key."""
    return hmac.new(secret_key, b"lipsyncd job events v1", hashlib.sha256).digest()


def event_signature(secret_key: bytes, subject: str, data: bytes) -> str:
    return hmac.new(_event_key(secret_key), subject.encode() + b"\n" + data, hashlib.sha256).hexdigest()


def event_headers(secret_key: bytes, job_id: str, status: str, data: bytes) -> dict[str, str]:
    """Headers of the job's final event: its deduplication id and its signature."""
    return {"Nats-Msg-Id": f"{job_id}:{status}",
            EVENT_SIGNATURE_HEADER: event_signature(secret_key, event_subject(job_id), data)}


def event_authentic(secret_key: bytes, subject: str, data: bytes, headers: Mapping[str, str] | None) -> bool:
    """True when the event carries the signature only a holder of the secret key can make."""
    given = (headers or {}).get(EVENT_SIGNATURE_HEADER, "")
    return bool(given) and hmac.compare_digest(given.encode(), event_signature(secret_key, subject, data).encode())


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


async def ensure_topology(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the streams and buckets if missing, each kept on `replicas` JetStream servers
    (LIPSYNCD_STREAM_REPLICAS; 3 on a clustered NATS); leaves existing ones as they are."""
    streams = [
        StreamConfig(
            name=JOBS_STREAM,
            subjects=[f"{JOBS_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=[f"{EVENTS_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=EVENTS_MAX_AGE_S,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=WEBHOOKS_STREAM,
            subjects=[f"{WEBHOOKS_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
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
                KeyValueConfig(bucket=bucket, ttl=ttl_s, storage=StorageType.FILE, history=1,
                               replicas=replicas)
            )
            log.info("created bucket %s", bucket)
