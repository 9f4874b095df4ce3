"""Hostile headers and query strings: a non-ASCII Bearer key or URL
signature is refused with 401/403 and the stable error code, never a 500."""
from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gateway.context import GatewayContext
from tests.integration.conftest_gateway import ApiAccount

pytestmark = pytest.mark.integration

MakeAccount = Callable[..., ApiAccount]
NON_ASCII_KEYS = ["same length as a real key", "sk_ä", "sk_0123abcd_\u00e9\u00e9\u00e9", "\u00ff" * 60, "sk_x_y\u00e0"]


@pytest.mark.parametrize("token", NON_ASCII_KEYS)
async def test_a_non_ascii_bearer_key_is_401(
    client: httpx.AsyncClient, make_account: MakeAccount, token: str
) -> None:
    account = make_account()
    if token == "same length as a real key":  # passes the length checks, fails on content
        token = account.api_key[:-1] + "\u00e9"
    # Header values travel as latin-1 bytes; httpx would refuse to encode a str with them.
    headers = [(b"authorization", b"Bearer " + token.encode("latin-1"))]
    for method, path in (("GET", "/api/v1/jobs"), ("POST", "/api/v1/uploads")):
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["error_code"] == "unauthorized"
    assert (await client.get("/api/v1/jobs", headers=account.headers)).status_code == 200


@pytest.mark.parametrize("signature", ["\u00e9" * 64, "ab\u00ff", "%00", "\u2603"])
async def test_a_non_ascii_url_signature_is_403(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext, signature: str
) -> None:
    account = make_account()
    uploaded = await client.post(
        "/api/v1/uploads", files={"file": ("a.wav", b"RIFF" + bytes(100))}, headers=account.headers
    )
    assert uploaded.status_code == 201
    url = httpx.URL(uploaded.json()["url"])
    forged = url.copy_set_param("signature", signature)
    response = await client.get(forged.raw_path.decode())
    assert response.status_code == 403, response.text
    assert response.json()["error_code"] == "invalid_signature"
    assert (await client.get(url.raw_path.decode())).status_code == 200
