"""Webhook deliveries an account can see: attempts reported by the orchestrator's sender
(stored as they arrive over NATS), and test events the dashboard sends from the gateway,
signed with the account's secret by the same sender the orchestrator uses."""
from __future__ import annotations

import datetime as dt
import json
import logging
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.accounts.principal import Principal
from gateway.accounts.users import ensure_webhook_secret
from gateway.api.schemas import check_http_url
from gateway.context import GatewayContext
from gateway.models import Account, Job, WebhookAttemptRow, utcnow
from postprocess.webhooks import DeliveryResult, HttpWebhookSender, WebhookDelivery
from proto import lipsync_pb2

log = logging.getLogger(__name__)

TEST_EVENT = "test"
RECENT_ATTEMPTS = 50


def store_attempt(session: Session, report: lipsync_pb2.WebhookAttempt) -> bool:
    """Store one reported attempt under the job's account; False for an unknown job or a
    report already stored (JetStream may deliver it twice)."""
    job = session.get(Job, report.job_id)
    if job is None:
        log.warning("webhook attempt for unknown job %s dropped", report.job_id)
        return False
    exists = session.scalar(
        select(WebhookAttemptRow.id).where(
            WebhookAttemptRow.webhook_id == report.webhook_id,
            WebhookAttemptRow.attempt == report.attempt,
        )
    )
    if exists is not None:
        return False
    attempted_at = dt.datetime.fromtimestamp(report.attempted_at_ms / 1000, dt.timezone.utc).replace(tzinfo=None)
    try:
        with session.begin_nested():
            session.add(WebhookAttemptRow(
                account_id=job.account_id, job_id=job.id, webhook_id=report.webhook_id,
                event=f"job.{job.status}", url=report.url, attempt=report.attempt,
                status_code=report.status_code or None, outcome=report.outcome,
                reason=report.reason, attempted_at=attempted_at,
            ))
    except IntegrityError:  # a concurrent gateway stored the same report
        return False
    return True


def recent_attempts(session: Session, account_id: str, limit: int = RECENT_ATTEMPTS) -> list[WebhookAttemptRow]:
    return list(session.scalars(
        select(WebhookAttemptRow)
        .where(WebhookAttemptRow.account_id == account_id)
        .order_by(WebhookAttemptRow.id.desc())
        .limit(limit)
    ))


def check_webhook_url(ctx: GatewayContext, url: str) -> str:
    """The URL, cleaned; ValueError naming what is wrong (https only, unless private URLs
    are allowed: the same rule as job submission)."""
    url = check_http_url(url)
    if not ctx.settings.allow_private_urls and not url.lower().startswith("https://"):
        raise ValueError("must be an https URL")
    return url


async def send_test_event(ctx: GatewayContext, principal: Principal, url: str) -> WebhookAttemptRow:
    """POST a signed test event to `url` now and record how it went."""
    def secret_of(session: Session) -> str:
        account = session.get(Account, principal.account_id)
        assert account is not None
        return ensure_webhook_secret(session, account)

    secret = await ctx.db.run_async(secret_of)
    webhook_id = "msg_test_" + secrets.token_hex(12)
    now = utcnow()
    body = json.dumps({
        "type": TEST_EVENT,
        "id": webhook_id,
        "created_at": now.isoformat(timespec="seconds") + "Z",
        "data": {"message": "Test event from the lipsyncd dashboard"},
    }).encode()
    sender = HttpWebhookSender(allow_private=ctx.settings.allow_private_urls)
    delivery = WebhookDelivery(webhook_id, "", url, secret, body, int(now.timestamp() * 1000))
    result: DeliveryResult = await sender.send(delivery)
    row = WebhookAttemptRow(
        account_id=principal.account_id, job_id=None, webhook_id=webhook_id, event=TEST_EVENT,
        url=url, attempt=1, status_code=result.status_code, outcome=result.outcome.value,
        reason=result.reason[:500], attempted_at=now,
    )

    def save(session: Session) -> WebhookAttemptRow:
        session.add(row)
        session.flush()
        session.expunge(row)
        return row

    return await ctx.db.run_async(save)
