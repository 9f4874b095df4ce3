"""Who is calling: an account, and which balance its jobs spend (API key → API credits,
dashboard session → app credits)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    account_id: str
    email: str
    plan: str
    credit_kind: str  # "api" (API key) | "app" (dashboard session)
    key_id: str | None = None

    @property
    def rate_limit_bucket(self) -> str:
        return f"key:{self.key_id}" if self.key_id else f"account:{self.account_id}"
