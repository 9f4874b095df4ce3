"""Signed file URLs, storage key confinement and the rate limiter's window."""
from __future__ import annotations

from pathlib import Path

from gateway.api.ratelimit import RateLimiter
from gateway.files import FileSigner


def make_signer(tmp_path: Path) -> FileSigner:
    return FileSigner(secret_key=b"k", public_url="https://api.example.com", storage_dir=tmp_path)


def test_signed_url_verifies_until_it_expires(tmp_path: Path) -> None:
    signer = make_signer(tmp_path)
    signed = signer.sign("outputs/a.mp4", ttl_s=7 * 24 * 3600, now_s=1_000_000)
    query = dict(part.split("=") for part in signed.url.split("?")[1].split("&"))
    expires = int(query["expires"])
    assert 7 * 24 * 3600 <= expires - 1_000_000 <= 7 * 24 * 3600 + 3600
    assert signer.verify("outputs/a.mp4", expires, query["signature"], now_s=1_000_000)
    assert not signer.verify("outputs/b.mp4", expires, query["signature"], now_s=1_000_000)
    assert not signer.verify("outputs/a.mp4", expires + 1, query["signature"], now_s=1_000_000)
    assert not signer.verify("outputs/a.mp4", expires, query["signature"], now_s=expires + 1)


def test_signature_is_hmac_sha256_of_key_and_expiry(tmp_path: Path) -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"outputs/a.mp4:123", hashlib.sha256).hexdigest()
    assert make_signer(tmp_path).signature("outputs/a.mp4", 123) == expected


def test_storage_keys_cannot_escape_the_storage_dir(tmp_path: Path) -> None:
    signer = make_signer(tmp_path)
    assert signer.path_for("outputs/a.mp4") == tmp_path.resolve() / "outputs/a.mp4"
    assert signer.path_for("../secret_key") is None
    assert signer.path_for("outputs/../../etc/passwd") is None
    assert signer.path_for("") is None


def test_rate_limiter_allows_the_limit_per_window_then_says_when_to_retry() -> None:
    limiter = RateLimiter(window_s=60)
    assert all(limiter.check("k", 3, now_s=100 + i) is None for i in range(3))
    assert limiter.check("k", 3, now_s=110) == 50
    assert limiter.check("other", 3, now_s=110) is None
    assert limiter.check("k", 3, now_s=160.5) is None  # the first hit left the window
