"""The gateway's side of the NATS JetStream job bus: publish JobRequests, read JobStatus
from the status bucket, set cancel flags, settle credits from job events (durable pull
consumer, acked after the database commit), and answer the orchestrator's reservation
requests. Handlers are injected, so this module knows NATS and protobuf, not the database."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from proto import lipsync_pb2, topology
from proto.sealed import seal
from proto.vocabulary import ErrorCode

log = logging.getLogger(__name__)

EventHandler = Callable[[lipsync_pb2.JobEvent], Awaitable[None]]
ReserveHandler = Callable[[lipsync_pb2.ReserveRequest], Awaitable[lipsync_pb2.ReserveReply]]
FinalizeHandler = Callable[[lipsync_pb2.JobEvent], Awaitable[lipsync_pb2.ReserveReply]]
AttemptHandler = Callable[[lipsync_pb2.WebhookAttempt], Awaitable[None]]

RESPONDER_QUEUE = "lipsyncd-gateway"
CLOSE_TIMEOUT_S = 5.0
EVENTS_BATCH = 16
EVENTS_FETCH_TIMEOUT_S = 2.0
EVENTS_ACK_WAIT_S = 60.0
EVENTS_RETRY_DELAY_S = 5.0
CONNECT_RETRY_S = 2.0


def without_credentials(url: str) -> str:
    """`nats://user:password@host:4222` -> `nats://host:4222`, for log lines."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class BusUnavailableError(Exception):
    pass


class PublishUncertainError(BusUnavailableError):
    """A publish timed out: JetStream may have stored the job all the same."""


class JobBus:
    """One NATS connection; `start` keeps retrying in the background until NATS answers."""

    def __init__(self, nats_url: str, timeout_s: float = 5.0, stream_replicas: int = 1, *,
                 user: str = "", password: str = "",
                 signing_key: bytes = b"") -> None:
        self._nats_url = nats_url
        self._where = without_credentials(nats_url)  # for logs: the URL may carry a password
        self._stream_replicas = stream_replicas
        self._timeout_s = timeout_s
        self._user = user
        self._password = password
        # Events settle credits only with the orchestrator's signature made with this key.
        self._signing_key = signing_key
        self._nc: Client | None = None
        self._closing = False
        self._js: JetStreamContext | None = None
        self._status_kv: KeyValue | None = None
        self._control_kv: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._on_finalize: FinalizeHandler | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._nc is not None and self._nc.is_connected

    async def wait_ready(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        return self.ready

    async def start(self, on_event: EventHandler, on_reserve: ReserveHandler,
                    on_finalize: FinalizeHandler | None = None,
                    on_webhook_attempt: AttemptHandler | None = None) -> None:
        self._on_finalize = on_finalize
        self._tasks.append(asyncio.create_task(self._connect_and_serve(on_event, on_reserve)))
        if on_webhook_attempt is not None:
            self._tasks.append(asyncio.create_task(self._store_attempts(on_webhook_attempt)))

    async def close(self) -> None:
        # nats-py may turn the cancel of a pending fetch into a TimeoutError, which the
        # consumer loops retry: they also stop on this flag.
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a consumer stuck inside a NATS call must not hold the shutdown forever.
            _, stuck = await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_S)
            for task in stuck:
                log.error("bus task %s did not stop within %.0f s of its cancel", task.get_coro(), CLOSE_TIMEOUT_S)
        self._tasks.clear()
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.close(), CLOSE_TIMEOUT_S)
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("NATS connection not closed cleanly: %r", exc)
        self._ready.clear()

    async def _connect_and_serve(self, on_event: EventHandler, on_reserve: ReserveHandler) -> None:
        while True:
            try:
                subscription = await self._connect(on_reserve)
                break
            except (OSError, nats.errors.Error, TimeoutError) as exc:
                log.warning("job bus setup on %s failed (%s); retrying", self._where, exc)
                if self._nc is not None and not self._nc.is_closed:
                    await self._nc.close()
                await asyncio.sleep(CONNECT_RETRY_S)
        self._ready.set()
        log.info("job bus ready on %s", self._where)
        await self._consume_events(subscription, on_event)

    async def _connect(self, on_reserve: ReserveHandler) -> JetStreamContext.PullSubscription:
        while True:
            try:
                self._nc = await nats.connect(
                    servers=[self._nats_url],
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    name="lipsyncd-gateway",
                    user=self._user or None,
                    password=self._password or None,
                )
                break
            except (OSError, nats.errors.Error) as exc:
                log.warning("NATS at %s not reachable (%s); retrying", self._where, exc)
                await asyncio.sleep(CONNECT_RETRY_S)
        self._js = self._nc.jetstream(timeout=self._timeout_s)
        await topology.ensure_topology(self._js, self._stream_replicas)
        self._status_kv = await self._js.key_value(topology.STATUS_BUCKET)
        self._control_kv = await self._js.key_value(topology.CONTROL_BUCKET)
        await self._nc.subscribe(
            topology.BILLING_RESERVE_SUBJECT,
            queue=RESPONDER_QUEUE,
            cb=functools.partial(self._answer_reserve, on_reserve=on_reserve),
        )
        if self._on_finalize is not None:
            await self._nc.subscribe(
                topology.BILLING_FINALIZE_SUBJECT,
                queue=RESPONDER_QUEUE,
                cb=functools.partial(self._answer_finalize, on_finalize=self._on_finalize),
            )
        subscription = await self._js.pull_subscribe(
            f"{topology.EVENTS_SUBJECT_PREFIX}.>",
            durable=topology.GATEWAY_EVENTS_CONSUMER,
            stream=topology.EVENTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, ack_wait=EVENTS_ACK_WAIT_S, max_deliver=-1
            ),
        )
        return subscription

    async def _consume_events(
        self, subscription: JetStreamContext.PullSubscription, on_event: EventHandler
    ) -> None:
        while True:
            try:
                messages = await subscription.fetch(EVENTS_BATCH, timeout=EVENTS_FETCH_TIMEOUT_S)
            except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises both kinds
                if self._closing:
                    return
                continue
            except Exception as exc:  # the events wait in JetStream; keep consuming
                log.warning("fetching job events failed: %r", exc)
                await asyncio.sleep(1.0)
                continue
            for message in messages:
                await self._settle(message, on_event)

    async def _store_attempts(self, on_attempt: AttemptHandler) -> None:
        """Webhook delivery reports from the sender, stored for the dashboard (durable
        consumer: reports published while the gateway was down are read when it is back)."""
        await self._ready.wait()
        assert self._js is not None
        while True:
            try:
                subscription = await self._js.pull_subscribe(
                    f"{topology.WEBHOOK_ATTEMPTS_SUBJECT_PREFIX}.>",
                    durable=topology.GATEWAY_WEBHOOK_ATTEMPTS_CONSUMER,
                    stream=topology.WEBHOOK_ATTEMPTS_STREAM,
                    config=ConsumerConfig(
                        ack_policy=AckPolicy.EXPLICIT, ack_wait=EVENTS_ACK_WAIT_S, max_deliver=5
                    ),
                )
                break
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("webhook attempts subscription failed (%r); retrying", exc)
                await asyncio.sleep(CONNECT_RETRY_S)
        while True:
            try:
                messages = await subscription.fetch(EVENTS_BATCH, timeout=EVENTS_FETCH_TIMEOUT_S)
            except (nats.errors.TimeoutError, TimeoutError):
                if self._closing:
                    return
                continue
            except Exception as exc:
                log.warning("fetching webhook attempts failed: %r", exc)
                await asyncio.sleep(1.0)
                continue
            for message in messages:
                try:
                    await on_attempt(lipsync_pb2.WebhookAttempt.FromString(message.data))
                except DecodeError:
                    log.error("dropping undecodable webhook attempt on %s", message.subject)
                    await message.term()
                    continue
                except Exception:
                    log.exception("storing webhook attempt from %s failed; will retry", message.subject)
                    await message.nak(delay=EVENTS_RETRY_DELAY_S)
                    continue
                await message.ack()

    async def _settle(self, message: Msg, on_event: EventHandler) -> None:
        if not topology.event_authentic(self._signing_key, message.subject, message.data, message.headers):
            log.error("dropping job event on %s: its signature does not verify", message.subject)
            await message.term()
            return
        try:
            event = lipsync_pb2.JobEvent.FromString(message.data)
        except DecodeError:
            log.error("dropping undecodable job event on %s", message.subject)
            await message.term()
            return
        try:
            await on_event(event)
        except Exception:
            # Ours, not the user's (database outage, bug): leave it for redelivery.
            log.exception("settling job %s failed; will retry", event.status.job_id)
            await message.nak(delay=EVENTS_RETRY_DELAY_S)
            return
        await message.ack()

    async def _answer_reserve(self, message: Msg, on_reserve: ReserveHandler) -> None:
        try:
            request = lipsync_pb2.ReserveRequest.FromString(message.data)
            reply = await on_reserve(request)
        except DecodeError:
            reply = lipsync_pb2.ReserveReply(ok=False, error_code=ErrorCode.BAD_REQUEST, error="undecodable")
        except Exception:
            log.exception("reservation request on %s failed", message.subject)
            reply = lipsync_pb2.ReserveReply(
                ok=False, error_code=ErrorCode.INTERNAL_ERROR, error="reservation failed"
            )
        if message.reply:
            await message.respond(reply.SerializeToString())

    async def _answer_finalize(self, message: Msg, on_finalize: FinalizeHandler) -> None:
        try:
            reply = await on_finalize(lipsync_pb2.JobEvent.FromString(message.data))
        except DecodeError:
            reply = lipsync_pb2.ReserveReply(ok=False, error_code=ErrorCode.BAD_REQUEST, error="undecodable")
        except Exception:
            # No reply at all: the orchestrator times out and asks again later.
            log.exception("finalize request on %s failed", message.subject)
            return
        if message.reply:
            await message.respond(reply.SerializeToString())

    def _require(self) -> JetStreamContext:
        if not self.ready or self._js is None:
            raise BusUnavailableError("job bus is not connected")
        return self._js

    async def publish_job(self, request: lipsync_pb2.JobRequest) -> None:
        """Publish once per job: the message id is the job id, so JetStream drops repeats.
        The webhook secret goes sealed, never in clear."""
        js = self._require()
        if request.webhook_secret and self._signing_key:
            sealed = lipsync_pb2.JobRequest()
            sealed.CopyFrom(request)
            sealed.webhook_secret_sealed = seal(self._signing_key, request.webhook_secret, request.job_id)
            sealed.ClearField("webhook_secret")
            request = sealed
        try:
            await js.publish(
                topology.job_subject(request.model),
                request.SerializeToString(),
                headers={"Nats-Msg-Id": request.job_id},
            )
        except (nats.errors.TimeoutError, TimeoutError) as exc:
            raise PublishUncertainError(f"publish timed out: {exc!r}") from exc
        except nats.errors.Error as exc:
            raise BusUnavailableError(str(exc)) from exc

    async def read_status(self, job_id: str) -> lipsync_pb2.JobStatus | None:
        self._require()
        assert self._status_kv is not None
        try:
            entry = await self._status_kv.get(job_id)
        except KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailableError(str(exc)) from exc
        if not entry.value:
            return None
        try:
            return lipsync_pb2.JobStatus.FromString(entry.value)
        except DecodeError:
            log.error("undecodable status for job %s", job_id)
            return None

    async def request_cancel(self, job_id: str, canceled_at_ms: int) -> None:
        """Set the job's cancel flag; its value is the moment of the cancel (ms since epoch)."""
        self._require()
        assert self._control_kv is not None
        try:
            await self._control_kv.put(topology.cancel_key(job_id), str(canceled_at_ms).encode())
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusUnavailableError(str(exc)) from exc
