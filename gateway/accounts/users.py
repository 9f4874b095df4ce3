"""Accounts: creation with argon2id passwords, login checks, credit grants and the
per-account webhook signing secret."""
from __future__ import annotations

import base64
import secrets
import uuid

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.billing import ledger
from gateway.models import Account, utcnow

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the email is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("not a password")


class AccountExistsError(Exception):
    pass


def normalize_email(email: str) -> str:
    return email.strip().lower()


def create_account(
    session: Session,
    email: str,
    password: str,
    plan: str,
    api_credits: int = 0,
    app_credits: int = 0,
) -> Account:
    email = normalize_email(email)
    if find_account(session, email) is not None:
        raise AccountExistsError(email)
    account = Account(
        id=str(uuid.uuid4()),
        email=email,
        password_hash=_hasher.hash(password),
        plan=plan,
        api_credits=0,
        app_credits=0,
        created_at=utcnow(),
    )
    session.add(account)
    session.flush()
    ledger.grant(session, account.id, api_credits=api_credits, app_credits=app_credits)
    return account


def find_account(session: Session, email: str) -> Account | None:
    return session.scalar(select(Account).where(Account.email == normalize_email(email)))


def count_accounts(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Account)) or 0


def verify_login(session: Session, email: str, password: str) -> Account | None:
    account = find_account(session, email)
    try:
        _hasher.verify(account.password_hash if account else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if account is None:
        return None
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    return account


def ensure_webhook_secret(session: Session, account: Account) -> str:
    """The account's Standard Webhooks secret (`whsec_` + base64 of 24 random bytes)."""
    if not account.webhook_secret:
        account.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        session.flush()
    return account.webhook_secret


def rotate_webhook_secret(session: Session, account: Account) -> str:
    """A new secret replaces the old one; jobs submitted from now on are signed with it."""
    account.webhook_secret = None
    return ensure_webhook_secret(session, account)
