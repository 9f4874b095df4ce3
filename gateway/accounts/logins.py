"""Password logins with a bounded cost: argon2 checks run at most N at a time per process
and outside any database transaction, and failed logins are counted in the database per
account and per client IP (so across gateway replicas) in a table that stays bounded.
`login_with_password` is the one entry point: the JSON login and a form login both call it."""
from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway.accounts import sessions, users
from gateway.db import Database
from gateway.models import Account, LoginFailure, utcnow
from gateway.settings import Settings

MAX_KEY_CHARS = 400
T = TypeVar("T")


class LoginThrottled(Exception):
    """Too many failed logins for this account or address, or too many checks waiting."""

    def __init__(self, retry_after_s: int, reason: str) -> None:
        super().__init__(reason)
        self.retry_after_s = max(1, retry_after_s)
        self.reason = reason


@dataclass(frozen=True)
class LoginPolicy:
    window_s: int = 900
    max_failures_per_account: int = 10
    max_failures_per_ip: int = 100
    max_rows: int = 100_000
    # Sign-ups are counted in the same table (key "signup:<ip>"), over their own window.
    signup_window_s: int = 3600
    max_signups_per_ip: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginPolicy:
        return cls(
            window_s=settings.login_window_s,
            max_failures_per_account=settings.login_max_failures_per_account,
            max_failures_per_ip=settings.login_max_failures_per_ip,
            max_rows=settings.login_throttle_max_rows,
            signup_window_s=settings.signup_window_s,
            max_signups_per_ip=settings.signup_max_per_ip,
        )


@dataclass(frozen=True)
class LoginSuccess:
    account_id: str
    email: str
    session_token: str  # the cookie value; only its SHA-256 is stored


class PasswordChecks:
    """argon2 work of one gateway process: at most `limit` at once on threads of its own
    (never the database's or the request pool's), at most `max_waiting` queued behind them."""

    def __init__(self, limit: int, max_waiting: int) -> None:
        self._semaphore = asyncio.Semaphore(limit)
        self._executor = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="argon2")
        self._max_waiting = max_waiting
        self._waiting = 0

    async def _run(self, work: Callable[..., T], *args: str | None) -> T:
        if self._semaphore.locked() and self._waiting >= self._max_waiting:
            raise LoginThrottled(1, "Too many logins at once; try again in a moment")
        self._waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self._waiting -= 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, work, *args)
        finally:
            self._semaphore.release()

    async def matches(self, password_hash: str | None, password: str) -> bool:
        return await self._run(users.password_matches, password_hash, password)

    async def hash(self, password: str) -> str:
        return await self._run(users.hash_password, password)


def throttle_keys(email: str, client_ip: str) -> tuple[str, str]:
    account_key = f"account:{users.normalize_email(email)}"[:MAX_KEY_CHARS]
    return account_key, f"ip:{client_ip}"[:MAX_KEY_CHARS]


def retry_after_s(
    connection: Connection, keys: Sequence[str], limits: Sequence[int], now: dt.datetime
) -> int | None:
    """Seconds until the first over-limit key's window ends, or None if none is over."""
    rows = connection.execute(
        select(LoginFailure.key, LoginFailure.failures, LoginFailure.window_ends_at)
        .where(LoginFailure.key.in_(keys), LoginFailure.window_ends_at > now)
    ).all()
    limit_of = dict(zip(keys, limits, strict=True))
    waits = [
        math.ceil((ends_at - now).total_seconds())
        for key, failures, ends_at in rows
        if failures >= limit_of[key]
    ]
    return max(waits) if waits else None


def record_failure(session: Session, keys: Sequence[str], policy: LoginPolicy, now: dt.datetime) -> None:
    """Count one failure against each key (a fresh window for a key whose window ended);
    ended windows are deleted, and past `max_rows` the rows ending soonest go first."""
    session.execute(delete(LoginFailure).where(LoginFailure.window_ends_at <= now))
    insert = postgresql.insert if session.bind and session.bind.dialect.name == "postgresql" else sqlite.insert
    ends_at = now + dt.timedelta(seconds=policy.window_s)
    for key in keys:
        statement = insert(LoginFailure).values(key=key, failures=1, window_ends_at=ends_at)
        session.execute(statement.on_conflict_do_update(
            index_elements=[LoginFailure.key],
            set_={"failures": LoginFailure.failures + 1},
        ))
    excess = (session.scalar(select(func.count()).select_from(LoginFailure)) or 0) - policy.max_rows
    if excess > 0:
        oldest = select(LoginFailure.key).order_by(LoginFailure.window_ends_at).limit(excess)
        session.execute(delete(LoginFailure).where(LoginFailure.key.in_(oldest.scalar_subquery())))


def _password_hash_of(connection: Connection, email: str) -> tuple[str, str, str] | None:
    row = connection.execute(
        select(Account.id, Account.email, Account.password_hash)
        .where(Account.email == users.normalize_email(email))
    ).first()
    return (row[0], row[1], row[2]) if row else None


async def login_with_password(
    db: Database,
    checks: PasswordChecks,
    policy: LoginPolicy,
    *,
    email: str,
    password: str,
    client_ip: str,
    session_ttl_s: int,
) -> LoginSuccess | None:
    """Check a password login and start a dashboard session.

    Returns None for a wrong email or password (the failure is counted), raises
    `LoginThrottled` (answer 429 with Retry-After) while the account or the address has too
    many failures in the window, or too many checks are queued in this process."""
    # 1. Refuse at once while the account or the address is over its limit.
    keys = throttle_keys(email, client_ip)
    limits = (policy.max_failures_per_account, policy.max_failures_per_ip)
    now = utcnow()
    wait_s = await db.read_async(lambda c: retry_after_s(c, keys, limits, now))
    if wait_s is not None:
        raise LoginThrottled(wait_s, "Too many failed logins; try again later")
    # 2. Check the password outside any transaction, bounded in concurrency.
    found = await db.read_async(lambda c: _password_hash_of(c, email))
    # Checked even for an unknown email (against a dummy hash): the time says nothing.
    if not await checks.matches(found[2] if found else None, password) or found is None:
        await db.run_async(lambda s: record_failure(s, keys, policy, utcnow()))
        return None
    account_id, account_email, old_hash = found
    new_hash = await checks.hash(password) if users.needs_rehash(old_hash) else None

    # 3. Clear the account's failures and start the session in one short transaction.
    def start(session: Session) -> str:
        session.execute(delete(LoginFailure).where(LoginFailure.key == keys[0]))
        if new_hash is not None:
            session.execute(
                update(Account).where(Account.id == account_id).values(password_hash=new_hash)
            )
        return sessions.start_session(session, account_id, session_ttl_s)

    token = await db.run_async(start)
    return LoginSuccess(account_id, account_email, token)


@dataclass(frozen=True)
class NewAccount:
    """What a sign-up grants: the plan and its two credit balances."""

    plan: str
    api_credits: int
    app_credits: int


async def sign_up(
    db: Database,
    checks: PasswordChecks,
    policy: LoginPolicy,
    *,
    email: str,
    password: str,
    client_ip: str,
    grant: NewAccount,
    session_ttl_s: int,
) -> LoginSuccess:
    """Create an account and start its session, at most `max_signups_per_ip` attempts per
    client address per `signup_window_s` (counted in the database before the password is
    hashed, so a flood is counted even while it waits; raises `LoginThrottled`). The argon2
    hash runs through `checks` (bounded, outside any transaction). Raises
    `users.AccountExistsError` when the email is taken (that attempt counts too)."""
    key = f"signup:{client_ip}"[:MAX_KEY_CHARS]
    window = replace(policy, window_s=policy.signup_window_s)
    now = utcnow()
    wait_s = await db.read_async(lambda c: retry_after_s(c, [key], [policy.max_signups_per_ip], now))
    if wait_s is not None:
        raise LoginThrottled(wait_s, "Too many sign-ups from this address; try again later")
    await db.run_async(lambda s: record_failure(s, [key], window, utcnow()))
    password_hash = await checks.hash(password)

    def create(session: Session) -> LoginSuccess:
        account = users.create_account(
            session, email, password, grant.plan, grant.api_credits, grant.app_credits,
            password_hash=password_hash,
        )
        token = sessions.start_session(session, account.id, session_ttl_s)
        return LoginSuccess(account.id, account.email, token)

    return await db.run_async(create)
