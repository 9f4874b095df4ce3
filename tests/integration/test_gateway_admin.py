"""The operator CLI as `make serve` and operators run it: a real process on a real SQLite."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.accounts import keys, users
from gateway.db import Database

REPO_ROOT = Path(__file__).resolve().parents[2]


def admin(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIPSYNCD_HOME": str(home)}
    env.pop("LIPSYNCD_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "gateway.admin", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_admin_commands_print_only_their_secret(tmp_path: Path) -> None:
    created = admin(tmp_path, "create-user", "Ops@Example.test", "--password", "pw",
                    "--api-credits", "40", "--app-credits", "7")
    assert created.returncode == 0, created.stderr
    key = admin(tmp_path, "create-key", "ops@example.test", "--name", "ci").stdout.strip()
    assert keys.parse_key(key) is not None
    secret = admin(tmp_path, "webhook-secret", "ops@example.test").stdout.strip()
    assert secret.startswith("whsec_")
    assert admin(tmp_path, "webhook-secret", "ops@example.test").stdout.strip() == secret
    assert admin(tmp_path, "grant", "ops@example.test", "--api-credits", "2").returncode == 0
    assert admin(tmp_path, "create-key", "nobody@example.test").returncode == 1

    db = Database(f"sqlite:///{tmp_path / 'lipsyncd.db'}")
    try:
        found = db.run(lambda s: keys.authenticate_key(s, key))
        assert found is not None
        _, account = found
        assert (account.email, account.api_credits, account.app_credits) == (
            "ops@example.test", 42, 7,
        )
    finally:
        db.dispose()


def test_ensure_admin_creates_the_admin_once_and_prints_a_fresh_key(tmp_path: Path) -> None:
    first = admin(tmp_path, "ensure-admin")
    second = admin(tmp_path, "ensure-admin")
    assert first.returncode == second.returncode == 0, first.stderr
    assert "created admin@localhost" in first.stderr and "created" not in second.stderr
    key_1, key_2 = first.stdout.strip(), second.stdout.strip()
    assert key_1 != key_2 and keys.parse_key(key_1) and keys.parse_key(key_2)
    db = Database(f"sqlite:///{tmp_path / 'lipsyncd.db'}")
    try:
        assert db.run(users.count_accounts) == 1
        assert db.run(lambda s: users.find_account(s, "admin@localhost").api_credits) > 0
    finally:
        db.dispose()


pytestmark = pytest.mark.integration
