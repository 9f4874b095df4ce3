"""Two real gateway processes (`python -m gateway`, uvicorn on their own loopback ports)
against one PostgreSQL database and one nats-server, as replicas behind a load balancer:
a key revoked through one stops on the other within the key cache TTL, and the per-minute
rate limit and the concurrent-job limit are counted across both."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.accounts import keys, users
from gateway.db import Database
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
KEY_CACHE_TTL_S = 2.0
REQUESTS_PER_MINUTE = 10
MAX_CONCURRENT_JOBS = 3
PLANS = {"replica": {"api_credits_grant": 0, "app_credits_grant": 0, "max_concurrent_jobs": MAX_CONCURRENT_JOBS,
                     "requests_per_minute": REQUESTS_PER_MINUTE}}
START_TIMEOUT_S = 60.0


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def _start(home: Path, env: dict[str, str]) -> Replica:
    port = free_port()
    log = home.with_suffix(".log")
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT,
                                   env=env | {"LIPSYNCD_HOME": str(home), "PORT": str(port)},
                                   stdout=out, stderr=subprocess.STDOUT)
    return Replica(f"http://127.0.0.1:{port}", process, log)


def _wait_healthy(replica: Replica) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise RuntimeError(f"gateway exited: {replica.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{replica.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gateway not healthy: {replica.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def replicas(postgres_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LIPSYNCD_", "AWS_"))}
    env.update({
        "LIPSYNCD_DATABASE_URL": postgres_url, "LIPSYNCD_NATS_URL": nats_url,
        "LIPSYNCD_SECRET_KEY": secrets.token_hex(32), "LIPSYNCD_PLANS": json.dumps(PLANS),
        "LIPSYNCD_DEFAULT_PLAN": "replica", "LIPSYNCD_API_KEY_CACHE_TTL_S": str(KEY_CACHE_TTL_S),
        "LIPSYNCD_TRITON_HTTP_URL": "http://127.0.0.1:9",
    })
    base = tmp_path_factory.mktemp("replicas")
    first = _start(base / "gateway-1", env)
    _wait_healthy(first)  # it migrates the database; the second then finds it at head
    second = _start(base / "gateway-2", env)
    started = [first, second]
    try:
        _wait_healthy(second)
        yield started
    finally:
        for replica in started:
            replica.process.terminate()
        for replica in started:
            try:
                replica.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    key_id: str
    api_key: str


def _make_account(postgres_url: str) -> Account:
    db = Database(postgres_url)
    email, password = f"replica-{uuid.uuid4().hex[:10]}@example.test", "correct horse battery staple"

    def create(session):  # type: ignore[no-untyped-def]
        account = users.create_account(session, email, password, "replica", 100, 0)
        return keys.create_key(session, account.id, "replicas")

    try:
        new_key = db.run(create)
    finally:
        db.dispose()
    return Account(email, password, new_key.key_id, new_key.plaintext)


def _jobs(replica: Replica, account: Account) -> httpx.Response:
    return httpx.get(f"{replica.url}/api/v1/jobs", headers={"Authorization": f"Bearer {account.api_key}"},
                     timeout=10)


def _wait_for_fresh_window() -> None:
    """The shared counter is a fixed one-minute window: start well inside one."""
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)


def test_key_revoked_on_one_replica_stops_on_the_other_within_the_cache_ttl(
    replicas: list[Replica], postgres_url: str
) -> None:
    _wait_for_fresh_window()
    first, second = replicas
    account = _make_account(postgres_url)
    assert _jobs(second, account).status_code == 200  # now cached on the second replica
    assert _jobs(first, account).status_code == 200

    with httpx.Client(base_url=first.url, timeout=10) as session:
        login = session.post("/auth/login", json={"email": account.email, "password": account.password})
        assert login.status_code in (200, 204, 303), login.text
        revoked_at = time.monotonic()
        # A cookie-authenticated change needs a same-origin Origin (the dashboard's CSRF rule).
        revoked = session.delete(f"/api/keys/{account.key_id}", headers={"Origin": first.url})
        assert revoked.status_code == 204, revoked.text
    assert _jobs(first, account).status_code == 401  # the replica that revoked: at once

    answers = []
    while time.monotonic() - revoked_at < KEY_CACHE_TTL_S + 3:
        answers.append((time.monotonic() - revoked_at, _jobs(second, account).status_code))
        if answers[-1][1] == 401:
            break
        time.sleep(0.35)  # at most ~8 polls inside the TTL: this key's plan allows 10 requests a minute
    assert answers[-1][1] == 401, answers
    assert answers[-1][0] <= KEY_CACHE_TTL_S + 0.5, answers  # the cache entry's own lifetime
    assert all(status == 200 for _, status in answers[:-1]), answers


def test_rate_limit_is_counted_across_both_replicas(replicas: list[Replica], postgres_url: str) -> None:
    _wait_for_fresh_window()
    account = _make_account(postgres_url)
    statuses = [_jobs(replicas[i % 2], account) for i in range(REQUESTS_PER_MINUTE + 2)]
    # Each replica saw at most 6 requests, under the limit of 10 on its own; together, 12.
    assert [answer.status_code for answer in statuses] == [200] * REQUESTS_PER_MINUTE + [429, 429]
    refused = statuses[-1]
    assert refused.json()["error_code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    other = _make_account(postgres_url)  # another key has its own count
    assert _jobs(replicas[0], other).status_code == 200


def test_concurrent_job_limit_holds_across_both_replicas(replicas: list[Replica], postgres_url: str) -> None:
    account = _make_account(postgres_url)
    body = {"formState": {"image": "https://media.example.com/face.png",
                          "audio": "https://media.example.com/voice.wav"}}
    headers = {"Authorization": f"Bearer {account.api_key}"}
    answers = [httpx.post(f"{replicas[i % 2].url}/api/v1/lipsync-image", json=body, headers=headers, timeout=30)
               for i in range(MAX_CONCURRENT_JOBS + 1)]
    assert [answer.status_code for answer in answers] == [200] * MAX_CONCURRENT_JOBS + [429], \
        [answer.text for answer in answers]
    assert answers[-1].json()["error_code"] == "too_many_concurrent_jobs"
