"""A real gateway process (`python -m gateway`, uvicorn on a loopback port) for attack
tests that need what an in-process ASGI client cannot show: the server's own memory, real
sockets that stream a body, and uvicorn's handling of proxy headers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from gateway.accounts import keys, users
from gateway.db import Database
from tests.servers import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


@dataclass
class LiveGateway:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    home: Path
    database_url: str

    def rss_bytes(self) -> int:
        """Resident memory of the gateway process, from /proc (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def make_account(self, api_credits: int = 100, plan: str = "test") -> tuple[str, str]:
        """(email, API key) of a fresh account, created straight in the gateway's database."""
        email = f"user-{uuid.uuid4().hex[:10]}@example.test"
        db = Database(self.database_url)

        def create(session: Session) -> str:
            account = users.create_account(session, email, PASSWORD, plan, api_credits, 0)
            return keys.create_key(session, account.id, "test").plaintext

        try:
            return email, db.run(create)
        finally:
            db.dispose()

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False


def start_live_gateway(
    tmp_path: Path, nats_url: str, extra_env: dict[str, str] | None = None
) -> Iterator[LiveGateway]:
    port = free_port()
    home = tmp_path / "live-home"
    database_url = f"sqlite:///{tmp_path / 'live.db'}"
    env = {
        **os.environ,
        "LIPSYNCD_HOME": str(home),
        "LIPSYNCD_DATABASE_URL": database_url,
        "LIPSYNCD_NATS_URL": nats_url,
        "LIPSYNCD_SECRET_KEY": "live-test-secret",
        "LIPSYNCD_TRITON_HTTP_URL": "http://127.0.0.1:9",
        "PORT": str(port),
        # Roomy limits, so that only the test that is about a limit meets it.
        "LIPSYNCD_PLANS": json.dumps({"test": {
            "api_credits_grant": 0, "app_credits_grant": 0, "max_concurrent_jobs": 100_000,
            "requests_per_minute": 100_000, "max_resolution": "720p",
        }}),
        "LIPSYNCD_DEFAULT_PLAN": "test",
        **(extra_env or {}),
    }
    log_path = tmp_path / "live-gateway.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=REPO_ROOT, env=env,
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    gateway = LiveGateway(process, f"http://127.0.0.1:{port}", port, home, database_url)
    try:
        deadline = time.monotonic() + 30
        while not gateway.healthy():
            if process.poll() is not None:
                raise AssertionError(log_path.read_text())
            if time.monotonic() > deadline:
                pytest.fail("the gateway did not start within 30 s")
            time.sleep(0.2)
        yield gateway
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
