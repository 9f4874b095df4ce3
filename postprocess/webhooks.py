"""Webhook delivery: a `WebhookSender` that POSTs one signed attempt (the SSRF-checked HTTP
default and a recording test double), the retry schedule, and the `WebhookDispatcher` that
keeps each pending delivery in JetStream, redelivered with backoff, until it succeeds."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import httpx
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from postprocess.signing import webhook_headers
from proto import lipsync_pb2, topology
from proto.addresses import (
    AddressRefused,
    HostUnresolvable,
    Resolver,
    pinned_request_parts,
    refusal_text,
    resolve_allowed_address,
    resolve_host,
)
from proto.sealed import SealBroken, seal, unseal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookDelivery:
    webhook_id: str
    job_id: str
    url: str
    secret: str
    body: bytes
    first_attempt_at_ms: int = 0

    @classmethod
    def from_proto(cls, msg: lipsync_pb2.WebhookDelivery) -> WebhookDelivery:
        return cls(msg.webhook_id, msg.job_id, msg.url, msg.secret, msg.body,
                   msg.first_attempt_at_ms)

    def to_proto(self) -> lipsync_pb2.WebhookDelivery:
        return lipsync_pb2.WebhookDelivery(
            webhook_id=self.webhook_id, job_id=self.job_id, url=self.url, secret=self.secret,
            body=self.body, first_attempt_at_ms=self.first_attempt_at_ms,
        )


class DeliveryOutcome(str, Enum):
    DELIVERED = "delivered"
    RETRYABLE = "retryable"   # receiver down, timeout, non-2xx, redirect: try again later
    PERMANENT = "permanent"   # the URL itself is not allowed: retrying cannot help


@dataclass(frozen=True)
class DeliveryResult:
    outcome: DeliveryOutcome
    status_code: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is DeliveryOutcome.DELIVERED


class WebhookSender(Protocol):
    async def send(self, delivery: WebhookDelivery) -> DeliveryResult: ...


def webhook_id_for(job_id: str) -> str:
    """Stable per job, so every retry and every re-enqueue carries the same webhook-id."""
    return "msg_" + hashlib.sha256(f"lipsyncd-webhook:{job_id}".encode()).hexdigest()[:32]


class HttpWebhookSender:
    """One signed POST per call, to the SSRF-checked and pinned address; never follows
    redirects. Only https, unless allow_private (then http and private targets too)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        timeout_s: float = 10.0,
        resolver: Resolver = resolve_host,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        clock: Callable[[], float] = time.time,
        user_agent: str = "lipsyncd-webhooks/0.1",
    ) -> None:
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self.resolver = resolver
        self.transport = transport
        self.verify = verify
        self.clock = clock
        self.user_agent = user_agent

    async def send(self, delivery: WebhookDelivery) -> DeliveryResult:
        try:
            url = httpx.URL(delivery.url)
        except (httpx.InvalidURL, TypeError):
            return DeliveryResult(DeliveryOutcome.PERMANENT, reason="invalid webhook URL")
        allowed_schemes = ("https", "http") if self.allow_private else ("https",)
        if url.scheme not in allowed_schemes or not url.raw_host:
            return DeliveryResult(DeliveryOutcome.PERMANENT, reason="webhook URL must be https")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            ip = await resolve_allowed_address(
                url.raw_host.decode("ascii"), port, allow_private=self.allow_private,
                resolver=self.resolver,
            )
        except AddressRefused as exc:
            host = url.raw_host.decode("ascii")
            return DeliveryResult(DeliveryOutcome.PERMANENT, reason=refusal_text(host, exc))
        except HostUnresolvable as exc:  # DNS may come back: retry
            return DeliveryResult(DeliveryOutcome.RETRYABLE, reason=str(exc))
        target, headers, extensions = pinned_request_parts(url, ip)
        # The timestamp is the attempt's, so each retry is signed afresh (same webhook-id).
        headers.update(webhook_headers(delivery.secret, delivery.webhook_id,
                                       int(self.clock()), delivery.body))
        headers["user-agent"] = self.user_agent
        headers["accept-encoding"] = "identity"
        try:
            async with httpx.AsyncClient(
                transport=self.transport, verify=self.verify, follow_redirects=False,
                trust_env=False, timeout=self.timeout_s,
            ) as client:
                request = client.build_request(
                    "POST", target, headers=headers, content=delivery.body, extensions=extensions
                )
                # Only the status is used: the reply's body is never read (nor decoded, so
                # a compressed bomb in it costs nothing), and identity is all we ask for.
                response = await asyncio.wait_for(client.send(request, stream=True), self.timeout_s)
                await response.aclose()
        except (asyncio.TimeoutError, httpx.TimeoutException):
            return DeliveryResult(DeliveryOutcome.RETRYABLE, reason="timed out")
        except httpx.HTTPError as exc:
            return DeliveryResult(DeliveryOutcome.RETRYABLE, reason=f"connection failed: {exc}")
        status = response.status_code
        if 200 <= status < 300:
            return DeliveryResult(DeliveryOutcome.DELIVERED, status_code=status)
        if 300 <= status < 400:
            return DeliveryResult(DeliveryOutcome.RETRYABLE, status, "redirect not followed")
        return DeliveryResult(DeliveryOutcome.RETRYABLE, status, f"HTTP {status}")


@dataclass
class RecordingWebhookSender:
    """Test double: records every delivery and answers with `results` in order, then
    DELIVERED once they run out."""

    results: list[DeliveryResult] = field(default_factory=list)
    sent: list[WebhookDelivery] = field(default_factory=list)

    async def send(self, delivery: WebhookDelivery) -> DeliveryResult:
        self.sent.append(delivery)
        if self.results:
            return self.results.pop(0)
        return DeliveryResult(DeliveryOutcome.DELIVERED, status_code=200)


DEFAULT_DELAYS_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


@dataclass(frozen=True)
class RetrySchedule:
    """Delays between attempts. The default follows Standard Webhooks' guidance: 5 s, 5 min,
    30 min, 2 h, 5 h, 10 h, 10 h, i.e. 8 attempts spread over about 27.6 hours."""

    delays_s: tuple[float, ...] = DEFAULT_DELAYS_S
    jitter: float = 0.2  # ±20 %, so receivers that fail together are not retried together

    @property
    def max_attempts(self) -> int:
        return len(self.delays_s) + 1

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (1-based), or None when
        that was the last attempt."""
        if attempt < 1 or attempt > len(self.delays_s):
            return None
        base_s = self.delays_s[attempt - 1]
        return base_s * (rng or random).uniform(1.0 - self.jitter, 1.0 + self.jitter)


RESUBSCRIBE_AFTER_FAILURES = 5


class WebhookDispatcher:
    """Durable delivery over JetStream: a pending delivery is a message on the webhooks
    work-queue stream; a failed attempt is nak'ed with the schedule's delay, so the message
    waits inside JetStream (surviving restarts) and carries its attempt count with it."""

    def __init__(
        self,
        sender: WebhookSender,
        schedule: RetrySchedule = RetrySchedule(),
        *,
        batch: int = 16,
        ack_wait_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        sealing_key: bytes = b"",
    ) -> None:
        self.sender = sender
        # With a key the pending delivery's secret waits in the stream sealed (proto/sealed.py).
        self.sealing_key = sealing_key
        self.schedule = schedule
        self.batch = batch
        self.ack_wait_s = ack_wait_s
        self.clock = clock
        self._js: JetStreamContext | None = None

    async def enqueue(
        self, js: JetStreamContext, job_id: str, url: str, secret: str, body: bytes
    ) -> str:
        """Queue the job's webhook; publishing twice for one job is deduplicated by NATS."""
        webhook_id = webhook_id_for(job_id)
        delivery = WebhookDelivery(webhook_id, job_id, url, secret, body,
                                   int(self.clock() * 1000))
        message = delivery.to_proto()
        if self.sealing_key and secret:
            message.secret_sealed = seal(self.sealing_key, secret, job_id)
            message.ClearField("secret")
        await js.publish(
            topology.webhook_subject(job_id), message.SerializeToString(),
            stream=topology.WEBHOOKS_STREAM, headers={"Nats-Msg-Id": webhook_id},
        )
        return webhook_id

    async def run(self, js: JetStreamContext, stop_event: asyncio.Event) -> None:
        """Deliver until stopped; a broken subscription (e.g. nats-server restarted) is
        made anew, since the pending deliveries wait safely in the stream meanwhile."""
        self._js = js
        while not stop_event.is_set():
            try:
                await self._consume(js, stop_event)
            except Exception:
                log.exception("webhook consumer broke; subscribing again in 1 s")
                await asyncio.sleep(1.0)

    async def _consume(self, js: JetStreamContext, stop_event: asyncio.Event) -> None:
        config = ConsumerConfig(
            durable_name=topology.WEBHOOK_CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.schedule.max_attempts,
            max_ack_pending=1000,
        )
        sub = await js.pull_subscribe(
            f"{topology.WEBHOOKS_SUBJECT_PREFIX}.>", durable=topology.WEBHOOK_CONSUMER,
            stream=topology.WEBHOOKS_STREAM, config=config,
        )
        failures = 0
        try:
            while not stop_event.is_set():
                try:
                    msgs = await sub.fetch(self.batch, timeout=1.0)
                except (NatsTimeoutError, asyncio.TimeoutError):  # nats-py raises both kinds
                    continue
                except NatsError as exc:  # reconnecting: the messages wait in JetStream
                    failures += 1
                    log.warning("webhook fetch failed, retrying: %r", exc)
                    if failures >= RESUBSCRIBE_AFTER_FAILURES:
                        raise
                    await asyncio.sleep(1.0)
                    continue
                failures = 0
                outcomes = await asyncio.gather(
                    *(self.handle(msg) for msg in msgs), return_exceptions=True
                )
                for msg, outcome in zip(msgs, outcomes, strict=True):
                    if isinstance(outcome, BaseException):  # e.g. the ack was lost
                        log.error("webhook message %s not settled (JetStream will redeliver)",
                                  msg.subject, exc_info=outcome)
        finally:
            try:
                await sub.unsubscribe()
            except NatsError:
                log.info("webhook subscription already gone")

    async def handle(self, msg: Msg) -> None:
        attempt = msg.metadata.num_delivered
        try:
            message = lipsync_pb2.WebhookDelivery.FromString(msg.data)
            if message.secret_sealed:
                message.secret = unseal(self.sealing_key, message.secret_sealed, message.job_id)
            delivery = WebhookDelivery.from_proto(message)
        except SealBroken:
            log.error("dropping webhook message on %s: its sealed secret does not open", msg.subject)
            await msg.term()
            return
        except DecodeError:
            log.error("dropping undecodable webhook message on %s", msg.subject)
            await msg.term()
            return
        try:
            result = await self.sender.send(delivery)
        except Exception as exc:  # a bug in a sender must not lose the delivery
            log.exception("webhook sender crashed for job %s", delivery.job_id)
            result = DeliveryResult(DeliveryOutcome.RETRYABLE, reason=f"sender error: {exc}")
        await self.report_attempt(delivery, attempt, result)
        if result.ok:
            log.info("webhook %s for job %s delivered on attempt %d (HTTP %s)",
                     delivery.webhook_id, delivery.job_id, attempt, result.status_code)
            await msg.ack()
            return
        delay_s = self.schedule.delay_for(attempt)
        if result.outcome is DeliveryOutcome.PERMANENT or delay_s is None:
            log.error("webhook %s for job %s abandoned after attempt %d: %s",
                      delivery.webhook_id, delivery.job_id, attempt, result.reason)
            await msg.term()
            return
        log.warning("webhook %s for job %s attempt %d failed (%s); retrying in %.1f s",
                    delivery.webhook_id, delivery.job_id, attempt, result.reason, delay_s)
        await msg.nak(delay=delay_s)

    async def report_attempt(self, delivery: WebhookDelivery, attempt: int,
                             result: DeliveryResult) -> None:
        """Tell the gateway how this attempt went (the account's dashboard lists them).
        Best effort: a lost report never holds up or repeats a delivery."""
        if self._js is None:
            return
        report = lipsync_pb2.WebhookAttempt(
            webhook_id=delivery.webhook_id, job_id=delivery.job_id, url=delivery.url,
            attempt=attempt, status_code=result.status_code or 0,
            outcome=result.outcome.value, reason=result.reason[:500],
            attempted_at_ms=int(self.clock() * 1000),
        )
        try:
            await self._js.publish(
                topology.webhook_attempt_subject(delivery.job_id), report.SerializeToString(),
                stream=topology.WEBHOOK_ATTEMPTS_STREAM,
                headers={"Nats-Msg-Id": f"{delivery.webhook_id}.{attempt}"},
            )
        except (NatsError, asyncio.TimeoutError) as exc:
            log.warning("webhook %s attempt %d not reported: %r", delivery.webhook_id, attempt, exc)
