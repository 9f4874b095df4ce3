"""Login throttling on SQLite and PostgreSQL: failures counted in the
database per account and per address, 429 with Retry-After past the limit, a bounded table."""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select

from gateway.accounts import logins
from gateway.context import GatewayContext
from gateway.models import LoginFailure, utcnow
from gateway.settings import Settings
from tests.integration.conftest_gateway import ApiAccount

pytestmark = pytest.mark.integration

MakeAccount = Callable[..., ApiAccount]
ACCOUNT_LIMIT = 3
IP_LIMIT = 5


@pytest.fixture
def gateway_settings(gateway_settings: Settings) -> Settings:
    return gateway_settings.model_copy(update={
        "login_max_failures_per_account": ACCOUNT_LIMIT,
        "login_max_failures_per_ip": IP_LIMIT,
        "login_window_s": 600,
    })


@pytest.fixture
async def client(gateway_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client from an address of its own: the PostgreSQL database outlives one test."""
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    transport = httpx.ASGITransport(app=gateway_app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
        yield http


async def attempt(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/auth/login", json={"email": email, "password": password})


async def test_an_account_is_throttled_after_its_failures_then_others_still_log_in(
    client: httpx.AsyncClient, make_account: MakeAccount
) -> None:
    victim, other = make_account(), make_account()
    for _ in range(ACCOUNT_LIMIT):
        assert (await attempt(client, victim.email, "wrong")).status_code == 401
    throttled = await attempt(client, victim.email.upper(), victim.password)
    assert throttled.status_code == 429
    assert throttled.json()["error_code"] == "rate_limited"
    assert 500 < int(throttled.headers["Retry-After"]) <= 600
    assert "lipsyncd_session" not in throttled.cookies
    # The address has IP_LIMIT - ACCOUNT_LIMIT failures left; a good login does not count.
    assert (await attempt(client, other.email, other.password)).status_code == 200


async def test_an_address_is_throttled_across_accounts_and_unknown_emails(
    client: httpx.AsyncClient, make_account: MakeAccount
) -> None:
    account = make_account()
    for n in range(IP_LIMIT):
        assert (await attempt(client, f"nobody-{n}@example.test", "x")).status_code == 401
    refused = await attempt(client, account.email, account.password)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


async def test_a_successful_login_clears_the_accounts_failures(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    account = make_account()
    for _ in range(ACCOUNT_LIMIT - 1):
        assert (await attempt(client, account.email, "wrong")).status_code == 401
    assert (await attempt(client, account.email, account.password)).status_code == 200
    key = logins.throttle_keys(account.email, "x")[0]
    assert ctx.db.run(lambda s: s.get(LoginFailure, key)) is None


def test_the_failure_table_is_bounded_and_forgets_ended_windows(ctx: GatewayContext) -> None:
    policy = logins.LoginPolicy(window_s=60, max_rows=100)
    now = utcnow()
    ctx.db.run(lambda s: s.execute(delete(LoginFailure)))  # other tests' rows
    for n in range(150):
        keys = logins.throttle_keys(f"u{n}@example.test", f"10.0.{n // 250}.{n % 250}")
        ctx.db.run(lambda s, keys=keys: logins.record_failure(s, keys, policy, now))
    count = ctx.db.run(lambda s: s.scalar(select(func.count()).select_from(LoginFailure)))
    assert count == 100
    later = now + dt.timedelta(seconds=61)
    ctx.db.run(lambda s: logins.record_failure(s, ("account:a", "ip:b"), policy, later))
    rows = ctx.db.run(lambda s: s.scalars(select(LoginFailure.key)).all())
    assert sorted(rows) == ["account:a", "ip:b"]
