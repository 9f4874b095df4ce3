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
    *,
    password_hash: str | None = None,
) -> Account:
    """`password_hash` (from `hash_password`, computed before the transaction) spares the
    transaction the hashing; without it `password` is hashed here."""
    email = normalize_email(email)
    if find_account(session, email) is not None:
        raise AccountExistsError(email)
    account = Account(
        id=str(uuid.uuid4()),
        email=email,
        password_hash=password_hash or _hasher.hash(password),
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


def hash_password(password: str) -> str:
    """argon2id: about 64 MiB and 0.1 s of a core. Call it outside any transaction."""
    return _hasher.hash(password)


def password_matches(password_hash: str | None, password: str) -> bool:
    """Check `password`; with no hash (unknown email) the dummy is checked, so a login
    takes as long either way. Costs what `hash_password` costs: call it outside any
    transaction, and through `logins.PasswordChecks` where requests can call it."""
    try:
        _hasher.verify(password_hash or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


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
