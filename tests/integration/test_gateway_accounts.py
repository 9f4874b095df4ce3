"""Dashboard sessions (login, key management, app credits) and media uploads, against a
running gateway on SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gateway.context import GatewayContext
from tests.integration.conftest_gateway import ApiAccount, api_balance

# Fixtures: gateway_app, client, ctx, make_account, orchestrator_nc (and nats_url).

pytestmark = pytest.mark.integration

MakeAccount = Callable[..., ApiAccount]
LOGIN_MESSAGE = "Please log in to create and manage API keys."
SAME_ORIGIN = {"Origin": "http://gateway.test"}  # a cookie state change must show its origin


async def login(client: httpx.AsyncClient, account: ApiAccount) -> None:
    response = await client.post(
        "/auth/login", json={"email": account.email.upper(), "password": account.password}
    )
    assert response.status_code == 200, response.text


async def test_key_management_needs_a_session(
    client: httpx.AsyncClient, make_account: MakeAccount
) -> None:
    account = make_account()
    anonymous = await client.get("/api/keys")
    with_api_key = await client.post("/api/keys", json={}, headers=account.headers)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == LOGIN_MESSAGE
    assert with_api_key.status_code == 401 and with_api_key.json()["error"] == LOGIN_MESSAGE


async def test_wrong_password_is_refused(client: httpx.AsyncClient, make_account: MakeAccount) -> None:
    account = make_account()
    response = await client.post(
        "/auth/login", data={"email": account.email, "password": "wrong"}
    )
    assert response.status_code == 401
    assert response.json()["error_code"] == "invalid_credentials"
    assert "lipsyncd_session" not in response.cookies


async def test_logged_in_user_creates_uses_and_revokes_a_key(
    client: httpx.AsyncClient, make_account: MakeAccount
) -> None:
    account = make_account(api_credits=30)
    await login(client, account)
    created = await client.post("/api/keys", json={"name": "ci"}, headers=SAME_ORIGIN)
    assert created.status_code == 201
    plaintext = created.json()["key"]
    assert plaintext.startswith("sk_") and created.json()["name"] == "ci"

    listed = (await client.get("/api/keys")).json()["data"]
    assert {key["name"] for key in listed} == {"test", "ci"}
    assert all("key" not in key for key in listed)  # shown once, at creation

    bearer = {"Authorization": f"Bearer {plaintext}"}
    used = await client.get("/api/v1/jobs", headers=bearer)
    assert used.status_code == 200
    listed = (await client.get("/api/keys")).json()["data"]
    assert next(k for k in listed if k["name"] == "ci")["last_used_at"] is not None

    revoked = await client.delete(f"/api/keys/{created.json()['id']}", headers=SAME_ORIGIN)
    assert revoked.status_code == 204
    assert (await client.get("/api/v1/jobs", headers=bearer)).status_code == 401

    await client.post("/auth/logout", headers=SAME_ORIGIN)
    client.cookies.clear()
    assert (await client.get("/api/keys")).status_code == 401


async def test_the_session_cookie_is_not_accepted_by_the_job_api(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    """Bearer only on /api/v1: a logged-in browser cannot be made to submit jobs by another
    site (dashboard jobs go through the dashboard's CSRF-checked forms, see test_dashboard)."""
    account = make_account(api_credits=10, app_credits=10)
    body = {
        "formState": {
            "image": "https://media.example.com/face.png",
            "audio": "https://media.example.com/voice.wav",
        }
    }
    assert (await client.post("/api/v1/lipsync-image", json=body, headers=account.headers)).status_code == 200
    await login(client, account)
    assert (await client.post("/api/v1/lipsync-image", json=body)).status_code == 401
    assert (await client.get("/api/v1/jobs")).status_code == 401
    assert api_balance(ctx, account.account_id, "api") == 5
    assert api_balance(ctx, account.account_id, "app") == 10
    summary = (await client.get("/api/account")).json()
    assert summary["api_credits"] == 5 and summary["app_credits"] == 10
    assert [entry["kind"] for entry in summary["ledger"]] == ["reserve", "grant", "grant"]
    client.cookies.clear()


async def test_uploaded_media_is_served_by_its_signed_url(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    account = make_account()
    payload = b"RIFF" + bytes(5000)
    response = await client.post(
        "/api/v1/uploads",
        files={"file": ("../../my voice.wav", payload, "audio/wav")},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["key"].startswith("uploads/") and body["key"].endswith("/my_voice.wav")
    assert body["size_bytes"] == len(payload)
    assert body["url"].startswith("http://gateway.test/files/uploads/")
    fetched = await client.get(body["url"].removeprefix("http://gateway.test"))
    assert fetched.status_code == 200 and fetched.content == payload
    assert (ctx.settings.storage_path / body["key"]).read_bytes() == payload

    anonymous = await client.post("/api/v1/uploads", files={"file": ("a.wav", payload)})
    assert anonymous.status_code == 401
