"""Secrets that cross the bus sealed: an account's `whsec_` webhook secret travels in the
JobRequest and the pending WebhookDelivery encrypted and authenticated (AES-256-GCM) with a
key derived from the secret key the gateway and the orchestrator share, bound to its job id,
so neither NATS, its stored streams, nor a NATS user can read it or move it to another job."""
from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
_PURPOSE = b"lipsyncd sealed webhook secrets v1"


class SealBroken(Exception):
    """The sealed bytes were altered, belong to another job, or another key sealed them."""


def _cipher(secret_key: bytes) -> AESGCM:
    return AESGCM(hmac.new(secret_key, _PURPOSE, hashlib.sha256).digest())


def seal(secret_key: bytes, plaintext: str, job_id: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _cipher(secret_key).encrypt(nonce, plaintext.encode(), job_id.encode())


def unseal(secret_key: bytes, sealed: bytes, job_id: str) -> str:
    if len(sealed) <= NONCE_BYTES:
        raise SealBroken("sealed secret too short")
    try:
        plain = _cipher(secret_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], job_id.encode())
    except InvalidTag:
        raise SealBroken(f"sealed secret of job {job_id} does not open with this key") from None
    return plain.decode()
