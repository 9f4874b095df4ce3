"""The operator CLI as `make serve` and operators run it: a real process on a real SQLite."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.accounts import keys, users
from gateway.db import Database

REPO_ROOT = Path(__file__).resolve().parents[2]


def admin(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIPSYNCD_HOME": str(home)}
    env.pop("LIPSYNCD_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "gateway.admin", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
        input=stdin,
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


def test_ensure_admin_writes_its_password_to_an_owner_only_file(tmp_path: Path) -> None:
    first = admin(tmp_path, "ensure-admin")
    assert first.returncode == 0, first.stderr
    path = tmp_path / "admin_password"
    assert str(path) in first.stderr
    password = path.read_text().strip()
    assert password and password not in first.stderr and password not in first.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for created in [tmp_path / "lipsyncd.db", *tmp_path.rglob("*")]:
        assert stat.S_IMODE(created.stat().st_mode) & 0o077 == 0, created
    db = Database(f"sqlite:///{tmp_path / 'lipsyncd.db'}")
    try:
        account = db.run(lambda s: users.find_account(s, "admin@localhost"))
        assert account is not None and users.password_matches(account.password_hash, password)
    finally:
        db.dispose()


def test_create_user_reads_the_password_from_stdin(tmp_path: Path) -> None:
    created = admin(tmp_path, "create-user", "stdin@example.test", "--password-stdin",
                    stdin="s3cret from a pipe\n")
    assert created.returncode == 0, created.stderr
    empty = admin(tmp_path, "create-user", "empty@example.test", "--password-stdin", stdin="")
    assert empty.returncode == 1 and "stdin held no password" in empty.stderr
    both = admin(tmp_path, "create-user", "x@example.test", "--password", "a", "--password-stdin")
    assert both.returncode == 2  # argparse: not both
    db = Database(f"sqlite:///{tmp_path / 'lipsyncd.db'}")
    try:
        account = db.run(lambda s: users.find_account(s, "stdin@example.test"))
        assert account is not None
        assert users.password_matches(account.password_hash, "s3cret from a pipe")
        assert db.run(lambda s: users.find_account(s, "empty@example.test")) is None
    finally:
        db.dispose()


pytestmark = pytest.mark.integration
