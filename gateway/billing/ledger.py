"""The credit ledger: every movement of credits is one row, and balances change only here,
through conditional UPDATEs so that a balance can never go below zero, however many
requests race. A job has at most one row per kind (reserve, reserve_raise, capture,
release), enforced by a UNIQUE constraint, so a redelivered event cannot settle twice."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal, cast

from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from gateway.models import Account, LedgerEntry, utcnow

if TYPE_CHECKING:
    from sqlalchemy import CursorResult

CreditKind = Literal["api", "app"]
CREDIT_KINDS: tuple[CreditKind, ...] = ("api", "app")


def _balance_column(credit_kind: str) -> InstrumentedAttribute[int]:
    if credit_kind == "api":
        return Account.api_credits
    if credit_kind == "app":
        return Account.app_credits
    raise ValueError(f"unknown credit kind {credit_kind!r}")


def balance(session: Session, account_id: str, credit_kind: str) -> int:
    column = _balance_column(credit_kind)
    return int(session.scalar(select(column).where(Account.id == account_id)) or 0)


def _record(
    session: Session,
    account_id: str,
    kind: str,
    credit_kind: str,
    credits: int,
    delta: int,
    job_id: str | None = None,
    note: str = "",
) -> LedgerEntry:
    entry = LedgerEntry(
        account_id=account_id,
        job_id=job_id,
        kind=kind,
        credit_kind=credit_kind,
        credits=credits,
        delta=delta,
        balance_after=balance(session, account_id, credit_kind),
        note=note,
        created_at=utcnow(),
    )
    session.add(entry)
    # Flush now so a duplicate (job_id, kind) fails here, inside the caller's transaction.
    session.flush()
    return entry


def _add(session: Session, account_id: str, credit_kind: str, credits: int) -> None:
    column = _balance_column(credit_kind)
    session.execute(
        update(Account)
        .where(Account.id == account_id)
        .values({column: column + credits})
        .execution_options(synchronize_session=False)
    )


def _take(session: Session, account_id: str, credit_kind: str, credits: int) -> bool:
    """Debit only if the balance covers it: one statement, so concurrent debits serialise
    on the row and the loser sees the new balance."""
    column = _balance_column(credit_kind)
    result = cast("CursorResult[Any]", session.execute(  # an UPDATE answers a CursorResult
        update(Account)
        .where(Account.id == account_id, column >= credits)
        .values({column: column - credits})
        .execution_options(synchronize_session=False)
    ))
    return result.rowcount == 1


def grant(
    session: Session, account_id: str, api_credits: int = 0, app_credits: int = 0, note: str = ""
) -> None:
    for credit_kind, credits in (("api", api_credits), ("app", app_credits)):
        if credits:
            _add(session, account_id, credit_kind, credits)
            _record(session, account_id, "grant", credit_kind, credits, credits, note=note)


def reserve(session: Session, account_id: str, credit_kind: str, job_id: str, credits: int) -> bool:
    if not _take(session, account_id, credit_kind, credits):
        return False
    _record(session, account_id, "reserve", credit_kind, credits, -credits, job_id=job_id)
    return True


def raise_reservation(
    session: Session, account_id: str, credit_kind: str, job_id: str, extra_credits: int
) -> bool:
    """Reserve `extra_credits` more for a job. A job has one reserve_raise row; a second
    raise (a redelivered job probed again) adds to it."""
    if not _take(session, account_id, credit_kind, extra_credits):
        return False
    existing = session.scalar(
        select(LedgerEntry).where(LedgerEntry.job_id == job_id, LedgerEntry.kind == "reserve_raise")
    )
    if existing is None:
        _record(
            session, account_id, "reserve_raise", credit_kind, extra_credits, -extra_credits, job_id
        )
    else:
        existing.credits += extra_credits
        existing.delta -= extra_credits
        existing.balance_after = balance(session, account_id, credit_kind)
    return True


def capture(session: Session, account_id: str, credit_kind: str, job_id: str, credits: int) -> None:
    """Record the final charge; the reservation already took it from the balance."""
    _record(session, account_id, "capture", credit_kind, credits, 0, job_id=job_id)


def release(session: Session, account_id: str, credit_kind: str, job_id: str, credits: int) -> None:
    """Give back reserved credits that will not be charged."""
    _add(session, account_id, credit_kind, credits)
    _record(session, account_id, "release", credit_kind, credits, credits, job_id=job_id)


def history(
    session: Session, account_id: str, limit: int = 50, before_id: int | None = None
) -> list[LedgerEntry]:
    query = select(LedgerEntry).where(LedgerEntry.account_id == account_id)
    if before_id is not None:
        query = query.where(LedgerEntry.id < before_id)
    return list(session.scalars(query.order_by(LedgerEntry.id.desc()).limit(limit)))


def captured_since(
    session: Session, account_id: str, since: dt.datetime
) -> list[tuple[dt.datetime, str, int]]:
    """(time, credit kind, credits) of every final charge since `since`: what was spent."""
    rows = session.execute(
        select(LedgerEntry.created_at, LedgerEntry.credit_kind, LedgerEntry.credits).where(
            LedgerEntry.account_id == account_id,
            LedgerEntry.kind == "capture",
            LedgerEntry.created_at >= since,
        )
    )
    return [(created_at, credit_kind, int(credits)) for created_at, credit_kind, credits in rows]
