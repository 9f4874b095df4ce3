"""The one signed-URL scheme for stored files: `{public_url}/files/{key}?expires=E&signature=S`
where S is hex HMAC-SHA256(secret_key, f"{key}:{E}") and E is unix seconds. The gateway
serves and verifies these links; the orchestrator signs the links of webhook bodies and
verifies links to its own uploads. Keys are percent-escaped in the path (safe "/")."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote

# Links are re-signed at each read; rounding the expiry up to the hour keeps the URL stable
# between polls (and equal in GET and webhook bodies made in the same hour).
EXPIRY_ROUNDING_S = 3600


def url_signature(secret_key: bytes, key: str, expires: int) -> str:
    return hmac.new(secret_key, f"{key}:{int(expires)}".encode(), hashlib.sha256).hexdigest()


def rounded_expiry(ttl_s: int, now_s: float | None = None) -> int:
    """now + ttl, rounded up to the next whole hour (unix seconds)."""
    now_s = time.time() if now_s is None else now_s
    return int((now_s + ttl_s) // EXPIRY_ROUNDING_S + 1) * EXPIRY_ROUNDING_S


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class UrlSigner:
    secret_key: bytes
    public_url: str

    def signature(self, key: str, expires: int) -> str:
        return url_signature(self.secret_key, key, expires)

    def url_until(self, key: str, expires: int) -> str:
        """The link for `key`, valid until `expires` (unix seconds, taken as given)."""
        base = self.public_url.rstrip("/")
        return f"{base}/files/{quote(key)}?expires={int(expires)}&signature={self.signature(key, expires)}"

    def sign(self, key: str, ttl_s: int, now_s: float | None = None,
             not_after_s: float | None = None) -> SignedUrl:
        """The link for `key`, valid for at least `ttl_s` (expiry rounded up to the hour), but
        never past `not_after_s` when given (the moment the file itself is removed)."""
        expires = rounded_expiry(ttl_s, now_s)
        if not_after_s is not None:
            expires = min(expires, int(not_after_s))
        return SignedUrl(self.url_until(key, expires), dt.datetime.fromtimestamp(expires, dt.timezone.utc))

    def verify(self, key: str, expires: int | str, signature: str, now_s: float | None = None) -> bool:
        """True if `signature` was made for this key and expiry and `expires` has not passed."""
        try:
            expires_at = int(expires)
        except (ValueError, TypeError):
            return False
        now_s = time.time() if now_s is None else now_s
        if now_s > expires_at or not isinstance(signature, str):
            return False
        return hmac.compare_digest(self.signature(key, expires_at).encode(), signature.encode())
