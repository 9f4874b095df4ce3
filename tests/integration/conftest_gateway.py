"""Fixtures for the gateway's integration tests: a running gateway app (lifespan included)
on SQLite or PostgreSQL against the session's real nats-server, accounts with keys, and a
raw NATS connection that plays the orchestrator's part."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client
from sqlalchemy.orm import Session

from gateway.accounts import keys, users
from gateway.app import create_app
from gateway.billing.plans import Plan
from gateway.context import GatewayContext
from gateway.models import Job
from gateway.settings import Settings
from tests.postgres import temporary_database

BACKENDS = ("sqlite", "postgresql")
# Roomy limits so that only the test that is about a limit meets it.
TEST_PLANS = {
    "test": Plan(
        api_credits_grant=0, app_credits_grant=0,
        max_concurrent_jobs=1000, requests_per_minute=10000, max_resolution="720p",
    ),
    "tight": Plan(
        api_credits_grant=0, app_credits_grant=0,
        max_concurrent_jobs=2, requests_per_minute=5, max_resolution="480p",
    ),
}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database created for this test session on the local PostgreSQL, dropped after."""
    with temporary_database("lipsyncd_test") as url:
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def gateway_settings(database_url: str, nats_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        nats_url=nats_url,
        public_url="http://gateway.test",
        secret_key="test-secret",
        plans=TEST_PLANS,
        default_plan="test",
        triton_http_url="http://127.0.0.1:9",  # nothing listens: readiness must say so
    )


@pytest.fixture
async def gateway_app(gateway_settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(gateway_settings)
    async with app.router.lifespan_context(app):
        ctx: GatewayContext = app.state.gateway
        assert await ctx.bus.wait_ready(10.0), "gateway did not connect to NATS"
        yield app


@pytest.fixture
def ctx(gateway_app: FastAPI) -> GatewayContext:
    context: GatewayContext = gateway_app.state.gateway
    return context


@pytest.fixture
async def client(gateway_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=gateway_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
        yield http


@dataclass(frozen=True)
class ApiAccount:
    account_id: str
    email: str
    password: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.fixture
def make_account(ctx: GatewayContext) -> Callable[..., ApiAccount]:
    def make(api_credits: int = 100, app_credits: int = 0, plan: str = "test") -> ApiAccount:
        email = f"user-{uuid.uuid4().hex[:10]}@example.test"
        password = "correct horse battery staple"

        def create(session: Session) -> ApiAccount:
            account = users.create_account(
                session, email, password, plan, api_credits, app_credits
            )
            key = keys.create_key(session, account.id, "test")
            return ApiAccount(account.id, email, password, key.plaintext)

        return ctx.db.run(create)

    return make


@pytest.fixture
async def orchestrator_nc(nats_url: str) -> AsyncIterator[Client]:
    """A plain NATS connection standing in for the orchestrator."""
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


def job_row(ctx: GatewayContext, job_id: str) -> Job:
    row = ctx.db.run(lambda s: s.get(Job, job_id))
    assert row is not None
    return row


async def wait_for_job_status(
    ctx: GatewayContext, job_id: str, status: str, timeout_s: float = 10.0
) -> Job:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        row = await ctx.db.run_async(lambda s: s.get(Job, job_id))
        if row is not None and row.status == status:
            return row
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} is {row.status if row else None}, not {status}")
        await asyncio.sleep(0.05)


def api_balance(ctx: GatewayContext, account_id: str, credit_kind: str = "api") -> int:
    from gateway.billing import ledger

    return ctx.db.run(lambda s: ledger.balance(s, account_id, credit_kind))
