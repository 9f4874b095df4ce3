"""Request validation: a bad request is a 422 that names the field, and nothing is queued
or charged. Runs the real app on a temporary SQLite database, without NATS."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.accounts import keys, users
from gateway.app import create_app
from gateway.billing import ledger
from gateway.context import GatewayContext
from gateway.settings import Settings

IMAGE = "https://media.example.com/face.png"
AUDIO = "https://media.example.com/voice.wav"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], GatewayContext]]:
    settings = Settings(home=tmp_path, nats_url="nats://127.0.0.1:9", secret_key="s")
    app = create_app(settings)
    ctx: GatewayContext = app.state.gateway
    ctx.db.migrate()

    def setup(session: Any) -> str:
        account = users.create_account(session, "v@example.test", "pw", "free", 100, 0)
        return keys.create_key(session, account.id).plaintext

    key = ctx.db.run(setup)
    ctx.db.run(lambda s: None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client, {"Authorization": f"Bearer {key}"}, ctx
    ctx.db.dispose()


@pytest.mark.parametrize(
    ("path", "form_state", "field"),
    [
        ("/api/v1/lipsync-image", {"image": IMAGE}, "formState.audio"),
        ("/api/v1/lipsync-image", {"audio": AUDIO}, "formState.image"),
        ("/api/v1/lipsync-image", {"image": "ftp://x/y.png", "audio": AUDIO}, "formState.image"),
        ("/api/v1/lipsync-image", {"image": "face.png", "audio": AUDIO}, "formState.image"),
        ("/api/v1/lipsync-image", {"image": IMAGE, "audio": AUDIO, "resolution": "1080p"},
         "formState.resolution"),
        ("/api/v1/lipsync-image", {"image": IMAGE, "audio": AUDIO, "seed": "abc"}, "formState.seed"),
        ("/api/v1/lipsync-image", {"image": IMAGE, "audio": AUDIO, "mask_image": "file:///m.png"},
         "formState.mask_image"),
        ("/api/v1/lipsync-video", {"video": IMAGE, "audio": AUDIO, "sync_mode": "stretch"},
         "formState.sync_mode"),
        ("/api/v1/lipsync-video", {"audio": AUDIO}, "formState.video"),
        ("/api/v1/lipsync-image-multi", {"image": IMAGE, "left_audio": AUDIO},
         "formState.right_audio"),
        ("/api/v1/lipsync-image-multi",
         {"image": IMAGE, "left_audio": AUDIO, "right_audio": AUDIO, "order": "sequence"},
         "formState.order"),
        ("/api/v1/lipsync-image-multi",
         {"image": IMAGE, "audios": [AUDIO, AUDIO], "left_audio": AUDIO}, "formState.audios"),
        ("/api/v1/lipsync-image-multi", {"image": IMAGE, "audios": [AUDIO]}, "formState.audios"),
    ],
)
async def test_bad_form_state_is_422_naming_the_field(
    api: tuple[httpx.AsyncClient, dict[str, str], GatewayContext],
    path: str,
    form_state: dict[str, Any],
    field: str,
) -> None:
    client, headers, ctx = api
    response = await client.post(path, json={"formState": form_state}, headers=headers)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error_code"] == "invalid_request"
    assert body["field"] == field
    assert body["error"].startswith(field)
    account_id = ctx.db.run(lambda s: users.find_account(s, "v@example.test").id)
    assert ctx.db.run(lambda s: ledger.balance(s, account_id, "api")) == 100


async def test_missing_form_state_and_bad_webhook_query_name_their_fields(
    api: tuple[httpx.AsyncClient, dict[str, str], GatewayContext],
) -> None:
    client, headers, _ = api
    missing = await client.post("/api/v1/lipsync-image", json={}, headers=headers)
    assert missing.status_code == 422 and missing.json()["field"] == "formState"
    bad_hook = await client.post(
        "/api/v1/lipsync-image", params={"webhook": "javascript:alert(1)"},
        json={"formState": {"image": IMAGE, "audio": AUDIO}}, headers=headers,
    )
    assert bad_hook.status_code == 422 and bad_hook.json()["field"] == "webhook"


async def test_aliases_are_accepted_and_reach_the_bus_check(
    api: tuple[httpx.AsyncClient, dict[str, str], GatewayContext],
) -> None:
    client, headers, _ = api
    body = {"formState": {"image_url": IMAGE, "audio_url": AUDIO, "seed": -1}}
    response = await client.post("/api/v1/lipsync-image", json=body, headers=headers)
    # Valid, so it got past validation to the (absent) job bus: nothing was charged.
    assert response.status_code == 503
    assert response.json()["error_code"] == "service_unavailable"


async def test_validation_runs_only_for_authenticated_callers(
    api: tuple[httpx.AsyncClient, dict[str, str], GatewayContext],
) -> None:
    client, _, _ = api
    response = await client.post("/api/v1/lipsync-image", json={"formState": {}})
    assert response.status_code == 401


async def test_json_body_without_a_content_type_is_still_read(
    api: tuple[httpx.AsyncClient, dict[str, str], GatewayContext],
) -> None:
    client, headers, _ = api
    response = await client.post(
        "/api/v1/lipsync-image",
        content=b'{"formState": {"image": "https://m.example/a.png"}}',
        headers=headers,
    )
    assert response.status_code == 422 and response.json()["field"] == "formState.audio"
