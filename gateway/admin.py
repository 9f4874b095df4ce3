"""Operator command line: `python -m gateway.admin create-user|create-key|webhook-secret|
grant|ensure-admin`. Secrets go to stdout alone (so scripts can capture them); everything
else is logged to stderr."""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from gateway.accounts import keys, users
from gateway.billing import ledger
from gateway.db import Database
from gateway.models import Account
from gateway.settings import Settings

log = logging.getLogger("gateway.admin")

ADMIN_PASSWORD_FILE = "admin_password"


class AdminError(Exception):
    pass


def _account(session: Session, email: str) -> Account:
    account = users.find_account(session, email)
    if account is None:
        raise AdminError(f"no account with email {email}")
    return account


def create_user(db: Database, settings: Settings, args: argparse.Namespace) -> str:
    plan = args.plan or settings.default_plan
    if plan not in settings.plans:
        raise AdminError(f"unknown plan {plan!r}; plans: {', '.join(settings.plans)}")

    grants = settings.plans[plan]
    api_credits = grants.api_credits_grant if args.api_credits is None else args.api_credits
    app_credits = grants.app_credits_grant if args.app_credits is None else args.app_credits

    password = read_password(args)
    password_hash = users.hash_password(password)  # before the transaction, not inside it

    def create(session: Session) -> str:
        try:
            account = users.create_account(
                session, args.email, password, plan, api_credits, app_credits,
                password_hash=password_hash,
            )
        except users.AccountExistsError:
            raise AdminError(f"an account with email {args.email} already exists") from None
        return account.id

    account_id = db.run(create)
    log.info("created account %s (%s)", args.email, account_id)
    return account_id


def create_key(db: Database, args: argparse.Namespace) -> str:
    return db.run(lambda s: keys.create_key(s, _account(s, args.email).id, args.name).plaintext)


def webhook_secret(db: Database, args: argparse.Namespace) -> str:
    return db.run(lambda s: users.ensure_webhook_secret(s, _account(s, args.email)))


def grant(db: Database, args: argparse.Namespace) -> str:
    def add(session: Session) -> str:
        account = _account(session, args.email)
        ledger.grant(session, account.id, args.api_credits, args.app_credits, note="admin grant")
        session.refresh(account)
        return f"api_credits={account.api_credits} app_credits={account.app_credits}"

    return db.run(add)


def read_password(args: argparse.Namespace) -> str:
    """--password, or with --password-stdin the first line of stdin (kept out of `ps` and
    shell history)."""
    if not args.password_stdin:
        return str(args.password)
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise AdminError("--password-stdin: stdin held no password")
    return password


def write_secret_file(path: Path, secret: str) -> None:
    """Write `secret` to a file only this user can read (0600), replacing any old one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(secret + "\n")


def ensure_admin(db: Database, settings: Settings) -> str:
    """Create the local admin if missing, with a random password written to
    $LIPSYNCD_HOME/admin_password (0600, never logged); print a fresh API key."""
    password = secrets.token_urlsafe(18)
    password_hash = users.hash_password(password)  # before the transaction
    created = False

    def ensure(session: Session) -> str:
        nonlocal created
        account = users.find_account(session, settings.admin_email)
        if account is None:
            account = users.create_account(
                session, settings.admin_email, password, "pro",
                settings.admin_api_credits, settings.admin_app_credits,
                password_hash=password_hash,
            )
            created = True
        return keys.create_key(session, account.id, "make serve").plaintext

    key = db.run(ensure)
    if created:
        path = settings.home / ADMIN_PASSWORD_FILE
        write_secret_file(path, password)
        log.warning("created %s; its password is in %s (readable by this user only)",
                    settings.admin_email, path)
    return key


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway.admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("create-user", help="create an account")
    p.add_argument("email")
    secret = p.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password")
    secret.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin")
    p.add_argument("--api-credits", type=int, default=None, help="default: the plan's grant")
    p.add_argument("--app-credits", type=int, default=None, help="default: the plan's grant")
    p.add_argument("--plan", default=None)
    p = commands.add_parser("create-key", help="create an API key (printed once)")
    p.add_argument("email")
    p.add_argument("--name", default="")
    p = commands.add_parser("webhook-secret", help="print the account's whsec_ secret")
    p.add_argument("email")
    p = commands.add_parser("grant", help="add credits")
    p.add_argument("email")
    p.add_argument("--api-credits", type=int, default=0)
    p.add_argument("--app-credits", type=int, default=0)
    commands.add_parser("ensure-admin", help="create the local admin if none; print a key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.umask(0o077)  # the database and anything else created under LIPSYNCD_HOME: owner only
    args = build_parser().parse_args(argv)
    settings = Settings()
    db = Database(settings.database_url)
    try:
        db.migrate()
        if args.command == "create-user":
            output = create_user(db, settings, args)
        elif args.command == "create-key":
            output = create_key(db, args)
        elif args.command == "webhook-secret":
            output = webhook_secret(db, args)
        elif args.command == "grant":
            output = grant(db, args)
        else:
            output = ensure_admin(db, settings)
    except AdminError as exc:
        log.error("%s", exc)
        return 1
    finally:
        db.dispose()
    sys.stdout.write(output + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
