"""SQLAlchemy tables the gateway owns: accounts, API keys, dashboard sessions, jobs and
the credit ledger, and the request counters the gateway replicas share. The schema itself is created by the Alembic migrations."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    """Naive UTC: SQLite has no time zones, so every timestamp is stored as naive UTC."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    plan: Mapped[str] = mapped_column(String(64))
    api_credits: Mapped[int] = mapped_column(BigInteger, default=0)
    app_credits: Mapped[int] = mapped_column(BigInteger, default=0)
    webhook_secret: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # Set on the dashboard's Webhooks page: where test events go, the Playground's default.
    webhook_url: Mapped[str] = mapped_column(Text, default="", server_default="")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key_sha256", name="uq_jobs_idempotency"),
        Index("ix_jobs_account_created", "account_id", "created_at", "id"),
        Index("ix_jobs_account_status", "account_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    credit_kind: Mapped[str] = mapped_column(String(8))  # api | app
    resolution: Mapped[str] = mapped_column(String(8))
    seed: Mapped[int] = mapped_column(BigInteger)
    form_state_json: Mapped[str] = mapped_column(Text)
    webhook_url: Mapped[str] = mapped_column(Text, default="")
    idempotency_key_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_sha256: Mapped[str] = mapped_column(String(64), default="")
    reserved_credits: Mapped[int] = mapped_column(BigInteger, default=0)
    charged_credits: Mapped[int] = mapped_column(BigInteger, default=0)
    output_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    error_code: Mapped[str] = mapped_column(String(64), default="")
    execution_time_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    timings_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    output_duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    output_deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class LedgerEntry(Base):
    """One movement of credits. `delta` is the change to the account balance of
    `credit_kind`; `credits` is the amount the movement is about (a capture moves no
    balance, the reservation already did, but records what was finally charged)."""

    __tablename__ = "ledger"
    __table_args__ = (
        UniqueConstraint("job_id", "kind", name="uq_ledger_job_kind"),
        Index("ix_ledger_account_id", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # grant|reserve|reserve_raise|capture|release
    credit_kind: Mapped[str] = mapped_column(String(8))
    credits: Mapped[int] = mapped_column(BigInteger)
    delta: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class RateLimitWindow(Base):
    """Requests counted per rate-limit bucket (an API key or an account) in one fixed
    window of a minute, shared by every gateway replica (gateway/api/ratelimit.py)."""

    __tablename__ = "rate_limit_windows"

    bucket: Mapped[str] = mapped_column(String(128), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # unix seconds
    count: Mapped[int] = mapped_column(Integer)


class LoginFailure(Base):
    """Failed logins counted per key ("account:<email>" or "ip:<address>") over a fixed
    window; rows whose window has ended are deleted, and the table is capped in rows."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_ends_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)


class WebhookAttemptRow(Base):
    """One attempt to deliver a webhook (a job's, reported by the orchestrator's sender over
    NATS, or a dashboard test event sent by the gateway): what the account's Webhooks page
    lists. Unique per (webhook id, attempt), so a redelivered report is stored once."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        UniqueConstraint("webhook_id", "attempt", name="uq_webhook_attempts_attempt"),
        Index("ix_webhook_attempts_account", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    webhook_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(32))  # job.completed | job.failed | ... | test
    url: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))  # delivered | retryable | permanent
    reason: Mapped[str] = mapped_column(Text, default="")
    attempted_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
