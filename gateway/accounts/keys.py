"""API keys: `sk_<prefix>_<secret><checksum>`. The prefix is the public lookup id, only a
SHA-256 of the secret is stored, and a CRC-32 checksum rejects mistyped keys before any
database lookup."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import string
import uuid
import zlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import Account, ApiKey, utcnow

KEY_SCHEME = "sk"
PREFIX_LENGTH = 8
SECRET_LENGTH = 40  # base62: ~238 bits
CHECKSUM_LENGTH = 6
_BASE62 = string.ascii_letters + string.digits
# last_used_at is a hint for humans, not an audit log: write it at most once a minute.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class ParsedKey:
    prefix: str
    secret: str


@dataclass(frozen=True)
class NewKey:
    key_id: str
    plaintext: str


def _checksum(body: str) -> str:
    return f"{zlib.crc32(body.encode()) & 0xFFFFFF:06x}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> tuple[str, ParsedKey]:
    prefix = secrets.token_hex(PREFIX_LENGTH // 2)
    secret = "".join(secrets.choice(_BASE62) for _ in range(SECRET_LENGTH))
    body = f"{KEY_SCHEME}_{prefix}_{secret}"
    return body + _checksum(body), ParsedKey(prefix=prefix, secret=secret)


def parse_key(plaintext: str) -> ParsedKey | None:
    """The key's parts, or None when it is malformed or its checksum does not match."""
    if not plaintext.isascii():  # compare_digest raises TypeError on non-ASCII str
        return None
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME:
        return None
    prefix, rest = parts[1], parts[2]
    if len(prefix) != PREFIX_LENGTH or len(rest) != SECRET_LENGTH + CHECKSUM_LENGTH:
        return None
    secret, checksum = rest[:SECRET_LENGTH], rest[SECRET_LENGTH:]
    if not hmac.compare_digest(_checksum(f"{KEY_SCHEME}_{prefix}_{secret}"), checksum):
        return None
    return ParsedKey(prefix=prefix, secret=secret)


def create_key(session: Session, account_id: str, name: str = "") -> NewKey:
    plaintext, parsed = generate_key()
    key = ApiKey(
        id=str(uuid.uuid4()),
        account_id=account_id,
        prefix=parsed.prefix,
        secret_sha256=hash_secret(parsed.secret),
        name=name[:200],
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    return NewKey(key_id=key.id, plaintext=plaintext)


def authenticate_key(session: Session, plaintext: str) -> tuple[ApiKey, Account] | None:
    """The live key and its account, or None (malformed, unknown, revoked or wrong secret)."""
    parsed = parse_key(plaintext)
    if parsed is None:
        return None
    row = session.execute(
        select(ApiKey, Account)
        .join(Account, Account.id == ApiKey.account_id)
        .where(ApiKey.prefix == parsed.prefix)
    ).first()
    if row is None:
        return None
    key, account = row
    if key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.secret_sha256, hash_secret(parsed.secret)):
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
    return key, account


def list_keys(session: Session, account_id: str) -> list[ApiKey]:
    return list(
        session.scalars(
            select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)
        )
    )


def revoke_key(session: Session, account_id: str, key_id: str) -> bool:
    key = session.get(ApiKey, key_id)
    if key is None or key.account_id != account_id:
        return False
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return True
