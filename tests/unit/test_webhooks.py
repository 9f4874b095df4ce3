"""Unit tests for postprocess/signing.py and postprocess/webhooks.py: the Standard Webhooks
test vector, verification, the retry schedule, the HTTP sender over a mock transport, and
the dispatcher's ack / nak / term decisions."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
from dataclasses import dataclass, field
from types import SimpleNamespace

import httpx
import pytest

from postprocess.signing import (
    InvalidSignature,
    new_webhook_secret,
    secret_key_bytes,
    sign_payload,
    verify_webhook,
    webhook_headers,
)
from postprocess.webhooks import (
    DeliveryOutcome,
    DeliveryResult,
    HttpWebhookSender,
    RecordingWebhookSender,
    RetrySchedule,
    WebhookDelivery,
    WebhookDispatcher,
    webhook_id_for,
)
from proto import lipsync_pb2

# The published Standard Webhooks test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_standard_webhooks_vector_is_reproduced_independently():
    key = base64.b64decode(VECTOR_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{VECTOR_ID}.{VECTOR_TS}.".encode() + VECTOR_BODY, hashlib.sha256)
    assert "v1," + base64.b64encode(digest.digest()).decode() == VECTOR_SIGNATURE


def test_sign_payload_matches_the_standard_webhooks_vector():
    assert sign_payload(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_headers_carry_id_timestamp_signature_and_json_type():
    headers = webhook_headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert headers == {
        "content-type": "application/json",
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": VECTOR_SIGNATURE,
    }


def test_verify_accepts_the_vector_and_rejects_tampering():
    headers = webhook_headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS + 10)
    with pytest.raises(InvalidSignature):
        verify_webhook(VECTOR_SECRET, headers, b'{"test": 2432232315}', now=VECTOR_TS)
    with pytest.raises(InvalidSignature):
        verify_webhook(new_webhook_secret(), headers, VECTOR_BODY, now=VECTOR_TS)
    with pytest.raises(InvalidSignature):  # replayed an hour later
        verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS + 3600)
    with pytest.raises(InvalidSignature):
        verify_webhook(VECTOR_SECRET, {**headers, "webhook-id": "msg_other"}, VECTOR_BODY,
                       now=VECTOR_TS)


def test_verify_accepts_any_of_several_signatures_and_any_header_case():
    headers = webhook_headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    mixed = {k.title(): v for k, v in headers.items()}
    mixed["Webhook-Signature"] = "v1,bm90IGl0 " + headers["webhook-signature"]
    verify_webhook(VECTOR_SECRET, mixed, VECTOR_BODY, now=VECTOR_TS)


def test_new_secrets_are_whsec_base64_of_24_bytes_and_differ():
    a, b = new_webhook_secret(), new_webhook_secret()
    assert a.startswith("whsec_") and a != b
    assert len(secret_key_bytes(a)) == 24


def test_a_secret_that_is_not_base64_is_rejected():
    with pytest.raises(ValueError):
        secret_key_bytes("whsec_not*base64!")


# --- retry schedule ----------------------------------------------------------------------

def test_default_schedule_spans_more_than_a_day_in_eight_attempts():
    schedule = RetrySchedule()
    assert schedule.max_attempts == 8
    assert sum(schedule.delays_s) > 24 * 3600
    assert schedule.delays_s[:2] == (5.0, 300.0)


def test_delays_have_bounded_jitter_and_end_after_the_last_attempt():
    schedule = RetrySchedule()
    rng = random.Random(7)
    delays = [schedule.delay_for(1, rng) for _ in range(500)]
    assert all(4.0 <= d <= 6.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # jitter is really applied
    assert 0.8 * 36000 <= schedule.delay_for(7, rng) <= 1.2 * 36000
    assert schedule.delay_for(8) is None
    assert schedule.delay_for(0) is None
    fast = RetrySchedule((0.2, 0.4), jitter=0.0)
    assert (fast.delay_for(1), fast.delay_for(2), fast.delay_for(3)) == (0.2, 0.4, None)


def test_webhook_ids_are_stable_per_job_and_distinct_between_jobs():
    assert webhook_id_for("job-1") == webhook_id_for("job-1")
    assert webhook_id_for("job-1") != webhook_id_for("job-2")
    assert webhook_id_for("job-1").startswith("msg_")


def test_deliveries_round_trip_through_protobuf():
    delivery = WebhookDelivery("msg_1", "job", "https://x/h", VECTOR_SECRET, b"{}", 123)
    wire = delivery.to_proto().SerializeToString()
    assert WebhookDelivery.from_proto(lipsync_pb2.WebhookDelivery.FromString(wire)) == delivery


# --- HTTP sender over a mock transport ---------------------------------------------------

def resolver_for(table):
    async def resolve(host, port):
        return table[host]
    return resolve


def sender_with(handler, table, **kwargs):
    seen: list[httpx.Request] = []

    def record(request):
        seen.append(request)
        return handler(request)
    sender = HttpWebhookSender(transport=httpx.MockTransport(record),
                               resolver=resolver_for(table), clock=lambda: VECTOR_TS, **kwargs)
    return sender, seen


def delivery(url="https://hooks.example.com/in") -> WebhookDelivery:
    body = json.dumps({"id": "j1", "status": "completed"}).encode()
    return WebhookDelivery(webhook_id_for("j1"), "j1", url, VECTOR_SECRET, body)


async def test_sender_posts_a_signed_body_to_the_pinned_address():
    sender, seen = sender_with(lambda r: httpx.Response(204),
                               {"hooks.example.com": ["93.184.216.34"]})
    result = await sender.send(delivery())
    assert result == DeliveryResult(DeliveryOutcome.DELIVERED, 204)
    request = seen[0]
    assert request.method == "POST"
    assert request.url.host == "93.184.216.34"
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert request.headers["content-type"] == "application/json"
    verify_webhook(VECTOR_SECRET, dict(request.headers), request.content, now=VECTOR_TS)
    assert request.headers["webhook-id"] == webhook_id_for("j1")


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_sender_does_not_follow_redirects(status):
    sender, seen = sender_with(
        lambda r: httpx.Response(status, headers={"location": "https://other.example/"}),
        {"hooks.example.com": ["93.184.216.34"], "other.example": ["93.184.216.35"]})
    result = await sender.send(delivery())
    assert result.outcome is DeliveryOutcome.RETRYABLE
    assert result.reason == "redirect not followed"
    assert len(seen) == 1


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
async def test_sender_treats_non_2xx_as_retryable(status):
    sender, _ = sender_with(lambda r: httpx.Response(status),
                            {"hooks.example.com": ["93.184.216.34"]})
    result = await sender.send(delivery())
    assert (result.outcome, result.status_code) == (DeliveryOutcome.RETRYABLE, status)


async def test_sender_refuses_plain_http_unless_private_urls_are_allowed():
    sender, seen = sender_with(lambda r: httpx.Response(200),
                               {"hooks.example.com": ["93.184.216.34"]})
    result = await sender.send(delivery("http://hooks.example.com/in"))
    assert result.outcome is DeliveryOutcome.PERMANENT and seen == []
    sender, seen = sender_with(lambda r: httpx.Response(200),
                               {"hooks.example.com": ["93.184.216.34"]}, allow_private=True)
    assert (await sender.send(delivery("http://hooks.example.com/in"))).ok


@pytest.mark.parametrize("ip,allow_private,ok", [
    ("10.0.0.5", False, False), ("10.0.0.5", True, True),
    ("127.0.0.1", False, False), ("127.0.0.1", True, True),
    ("169.254.169.254", True, False), ("::ffff:169.254.169.254", True, False),
    ("::ffff:127.0.0.1", False, False),
])
async def test_sender_applies_the_fetch_address_rules(ip, allow_private, ok):
    sender, seen = sender_with(lambda r: httpx.Response(200), {"hooks.example.com": [ip]},
                               allow_private=allow_private)
    result = await sender.send(delivery())
    assert result.ok is ok
    if not ok:
        assert result.outcome is DeliveryOutcome.PERMANENT
        assert "the host hooks.example.com resolves to an address that" in result.reason
        assert ip not in result.reason  # the internal DNS answer is not revealed
        assert seen == []


async def test_sender_reports_connection_errors_as_retryable():
    def refuse(request):
        raise httpx.ConnectError("connection refused")
    sender, _ = sender_with(refuse, {"hooks.example.com": ["93.184.216.34"]})
    result = await sender.send(delivery())
    assert result.outcome is DeliveryOutcome.RETRYABLE and "connection failed" in result.reason


async def test_recording_sender_replays_scripted_results_then_succeeds():
    sender = RecordingWebhookSender([DeliveryResult(DeliveryOutcome.RETRYABLE, 500, "HTTP 500")])
    assert not (await sender.send(delivery())).ok
    assert (await sender.send(delivery())).ok
    assert len(sender.sent) == 2


# --- dispatcher decisions on fake JetStream messages -------------------------------------

@dataclass
class FakeMsg:
    data: bytes
    num_delivered: int
    subject: str = "lipsyncd.webhooks.j1"
    actions: list = field(default_factory=list)

    @property
    def metadata(self):
        return SimpleNamespace(num_delivered=self.num_delivered)

    async def ack(self):
        self.actions.append(("ack",))

    async def nak(self, delay=None):
        self.actions.append(("nak", delay))

    async def term(self):
        self.actions.append(("term",))


def wire() -> bytes:
    return delivery().to_proto().SerializeToString()


FAST = RetrySchedule((0.2, 0.4), jitter=0.0)
FAIL = DeliveryResult(DeliveryOutcome.RETRYABLE, 500, "HTTP 500")


async def test_dispatcher_acks_a_delivered_webhook():
    msg = FakeMsg(wire(), 1)
    await WebhookDispatcher(RecordingWebhookSender(), FAST).handle(msg)
    assert msg.actions == [("ack",)]


async def test_dispatcher_naks_with_the_scheduled_delay_for_the_attempt():
    first, second = FakeMsg(wire(), 1), FakeMsg(wire(), 2)
    dispatcher = WebhookDispatcher(RecordingWebhookSender([FAIL, FAIL]), FAST)
    await dispatcher.handle(first)
    await dispatcher.handle(second)
    assert first.actions == [("nak", 0.2)] and second.actions == [("nak", 0.4)]


async def test_dispatcher_terminates_after_the_last_attempt():
    msg = FakeMsg(wire(), 3)
    await WebhookDispatcher(RecordingWebhookSender([FAIL]), FAST).handle(msg)
    assert msg.actions == [("term",)]


async def test_dispatcher_terminates_permanent_failures_at_once():
    msg = FakeMsg(wire(), 1)
    permanent = DeliveryResult(DeliveryOutcome.PERMANENT, reason="the address 10.0.0.1 is private")
    await WebhookDispatcher(RecordingWebhookSender([permanent]), FAST).handle(msg)
    assert msg.actions == [("term",)]


async def test_dispatcher_retries_when_the_sender_itself_crashes():
    class Broken:
        async def send(self, delivery):
            raise RuntimeError("bug")
    msg = FakeMsg(wire(), 1)
    await WebhookDispatcher(Broken(), FAST).handle(msg)
    assert msg.actions == [("nak", 0.2)]


async def test_dispatcher_drops_undecodable_messages():
    msg = FakeMsg(b"\xff\xff\xff not protobuf", 1)
    await WebhookDispatcher(RecordingWebhookSender(), FAST).handle(msg)
    assert msg.actions == [("term",)]


async def test_sender_times_out_slow_receivers():
    async def slow(request):
        await asyncio.sleep(5)
        return httpx.Response(200)
    sender = HttpWebhookSender(transport=httpx.MockTransport(slow), timeout_s=0.2,
                               resolver=resolver_for({"hooks.example.com": ["93.184.216.34"]}))
    result = await sender.send(delivery())
    assert (result.outcome, result.reason) == (DeliveryOutcome.RETRYABLE, "timed out")
