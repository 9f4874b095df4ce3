"""Dashboard login sessions: a random cookie token whose SHA-256 is stored with an expiry."""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid

from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from gateway.accounts.principal import Principal
from gateway.models import Account, Session, utcnow

SESSION_COOKIE = "lipsyncd_session"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(db: DbSession, account_id: str, ttl_s: int) -> str:
    """Create a session and return the cookie token (shown to the browser only)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    db.add(
        Session(
            id=str(uuid.uuid4()),
            account_id=account_id,
            token_sha256=_hash(token),
            created_at=now,
            expires_at=now + dt.timedelta(seconds=ttl_s),
        )
    )
    return token


def resolve_session(db: DbSession, token: str) -> Account | None:
    row = db.execute(
        select(Session, Account)
        .join(Account, Account.id == Session.account_id)
        .where(Session.token_sha256 == _hash(token))
    ).first()
    if row is None or row[0].expires_at <= utcnow():
        return None
    return row[1]


def session_principal(db: DbSession, token: str) -> Principal | None:
    """Who a session token stands for (dashboard credits), or None if unknown or expired."""
    account = resolve_session(db, token)
    return None if account is None else Principal(account.id, account.email, account.plan, "app")


def end_session(db: DbSession, token: str) -> None:
    db.execute(delete(Session).where(Session.token_sha256 == _hash(token)))
