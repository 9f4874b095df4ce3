"""API key format: checksum catches typos, only the secret's hash is kept."""
from __future__ import annotations

import hashlib

from gateway.accounts import keys


def test_generated_key_has_the_documented_shape_and_parses_back() -> None:
    plaintext, parsed = keys.generate_key()
    scheme, prefix, rest = plaintext.split("_", 2)
    assert scheme == "sk" and prefix == parsed.prefix and len(prefix) == keys.PREFIX_LENGTH
    assert len(rest) == keys.SECRET_LENGTH + keys.CHECKSUM_LENGTH
    assert keys.parse_key(plaintext) == parsed


def test_every_single_character_typo_is_rejected_without_a_lookup() -> None:
    plaintext, _ = keys.generate_key()
    start = len("sk_")
    for position in range(start, len(plaintext)):
        if plaintext[position] == "_":
            continue
        replacement = "A" if plaintext[position] != "A" else "B"
        typo = plaintext[:position] + replacement + plaintext[position + 1 :]
        assert keys.parse_key(typo) is None, position


def test_malformed_keys_are_rejected() -> None:
    plaintext, _ = keys.generate_key()
    for candidate in ("", "sk_", "pk" + plaintext[2:], plaintext[:-1], plaintext + "x", "Bearer"):
        assert keys.parse_key(candidate) is None


def test_only_the_sha256_of_the_secret_is_stored() -> None:
    _, parsed = keys.generate_key()
    assert keys.hash_secret(parsed.secret) == hashlib.sha256(parsed.secret.encode()).hexdigest()
    assert parsed.secret not in keys.hash_secret(parsed.secret)


def test_keys_are_unique() -> None:
    generated = {keys.generate_key()[0] for _ in range(200)}
    assert len(generated) == 200
