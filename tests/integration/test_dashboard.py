"""The dashboard against a running gateway (SQLite and PostgreSQL, real nats-server): the
front door and offline API reference, sign-up and keys through the same functions as the
API, CSRF on every form, cookies refused by /api/v1, Bearer keys ignored by the pages, one
account never seeing another's keys, jobs or files, outputs deleted, webhook secrets and
deliveries (test events from the gateway, attempts reported by the real dispatcher)."""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.accounts import keys
from gateway.billing.settlement import Outcome, settle
from gateway.context import GatewayContext
from gateway.models import Account, Job, LoginFailure
from gateway.settings import Settings
from postprocess.signing import verify_webhook
from postprocess.webhooks import (
    DeliveryOutcome,
    DeliveryResult,
    RecordingWebhookSender,
    RetrySchedule,
    WebhookDispatcher,
)
from tests.integration.conftest_gateway import TEST_PLANS, ApiAccount, api_balance
from tests.servers import WebhookReceiver

pytestmark = pytest.mark.integration

MakeAccount = Callable[..., ApiAccount]
PASSWORD = "correct horse battery staple"
IMAGE_BODY = {"formState": {"image": "https://media.example.com/face.png",
                            "audio": "https://media.example.com/voice.wav"}}
PAGES = ("/keys", "/credits", "/jobs", "/playground", "/webhooks", "/docs/quickstart",
         f"/jobs/{uuid.uuid4()}")


@pytest.fixture
def gateway_settings(
    database_url: str, nats_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Settings:
    """As the shared fixture, plus private URLs allowed (the webhook receiver is on loopback);
    a test's `settings` marker overrides fields (e.g. small throttling limits)."""
    marker = request.node.get_closest_marker("settings")
    return Settings(
        home=tmp_path / "home", database_url=database_url, nats_url=nats_url,
        public_url="http://gateway.test", secret_key="test-secret", plans=TEST_PLANS,
        default_plan="test", triton_http_url="http://127.0.0.1:9", allow_private_urls=True,
        **(marker.kwargs if marker else {}),
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert found, "page has no CSRF token"
    return found.group(1)


async def web_login(client: httpx.AsyncClient, account: ApiAccount) -> str:
    """Log in through the form; returns a CSRF token of the new session."""
    token = csrf_of((await client.get("/login")).text)
    response = await client.post("/login", data={
        "email": account.email, "password": account.password, "csrf_token": token})
    assert response.status_code == 303, response.text
    return csrf_of((await client.get("/keys")).text)


def new_client(ctx_client: httpx.AsyncClient) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=ctx_client._transport, base_url="http://gateway.test")


async def test_front_door_redirects_and_the_api_reference_is_served_offline(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/")).headers["location"] == "/login"
    for page in PAGES:
        response = await client.get(page)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), page
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = (await client.get(page)).text
        scripts = re.findall(r'src="([^"]+)"', html)
        assert scripts and all(src.startswith("/static/apidocs/") for src in scripts), scripts
        assert "cdn" not in html.lower() and "fonts.googleapis" not in html
        served = await client.get(f"/static/apidocs/{asset}")
        assert served.status_code == 200 and len(served.content) > 500_000
    login = (await client.get("/login")).text
    assert 'href="/docs"' in login and 'dir="ltr"' in login


async def test_signup_creates_keys_that_work_until_revoked(
    client: httpx.AsyncClient, ctx: GatewayContext
) -> None:
    email = f"new-{uuid.uuid4().hex[:8]}@example.test"
    token = csrf_of((await client.get("/signup")).text)
    signed_up = await client.post("/signup", data={"email": email, "password": PASSWORD, "csrf_token": token})
    assert signed_up.status_code == 303 and signed_up.headers["location"] == "/keys"
    cookie = signed_up.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax") and "Secure" not in cookie

    keys_page = await client.get("/keys")
    created = await client.post("/keys", data={"name": "laptop", "csrf_token": csrf_of(keys_page.text)})
    plaintext = re.search(r'id="new-key" class="mono" readonly value="(sk_[^"]+)"', created.text).group(1)
    assert "only time the full key is shown" in created.text
    bearer = {"Authorization": f"Bearer {plaintext}"}
    async with new_client(client) as api:
        assert (await api.get("/api/v1/jobs", headers=bearer)).status_code == 200
    listing = (await client.get("/keys")).text
    assert "laptop" in listing and plaintext not in listing

    key_id = re.search(r'action="/keys/([0-9a-f-]{36})/revoke"', listing).group(1)
    revoked = await client.post(f"/keys/{key_id}/revoke", data={"csrf_token": csrf_of(listing)})
    assert revoked.status_code == 303
    async with new_client(client) as api:
        assert (await api.get("/api/v1/jobs", headers=bearer)).status_code == 401


async def test_forms_without_the_right_csrf_token_are_refused(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    account = make_account()
    async with new_client(client) as fresh:  # no pre-session cookie at all
        refused = await fresh.post("/login", data={"email": account.email, "password": account.password})
        assert refused.status_code == 403 and "lipsyncd_session" not in refused.cookies
    await web_login(client, account)
    count = len(ctx.db.run(lambda s: keys.list_keys(s, account.account_id)))
    for data in ({"name": "x"}, {"name": "x", "csrf_token": "0" * 64}):
        answer = await client.post("/keys", data=data)
        assert answer.status_code == 403 and "Reload the page" in answer.text
    # the JSON key endpoints with the cookie: a token header or a same-origin Origin
    assert (await client.post("/api/keys", json={})).status_code == 403
    assert (await client.post("/api/keys", json={}, headers={"Origin": "https://evil.example"})).status_code == 403
    assert (await client.post("/api/keys", json={}, headers={"Origin": "http://gateway.test"})).status_code == 201
    assert len(ctx.db.run(lambda s: keys.list_keys(s, account.account_id))) == count + 1


async def test_api_ignores_the_cookie_and_pages_ignore_bearer_keys(
    client: httpx.AsyncClient, make_account: MakeAccount
) -> None:
    account = make_account()
    async with new_client(client) as api:
        page = await api.get("/keys", headers=account.headers)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
    await web_login(client, account)
    assert (await client.get("/api/v1/jobs")).status_code == 401
    assert (await client.post("/api/v1/lipsync-image", json=IMAGE_BODY)).status_code == 401


async def test_playground_jobs_spend_app_credits_through_the_api_submit(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    account = make_account(api_credits=10, app_credits=10)
    token = await web_login(client, account)
    upload = {"audio_file": ("voice.wav", b"RIFF" + bytes(4000), "audio/wav")}
    submitted = await client.post("/playground", data={
        "csrf_token": token, "mode": "lipsync-image", "image_url": "https://media.example.com/face.png",
        "resolution": "480p", "seed": "7", "prompt": "calm"}, files=upload)
    assert submitted.status_code == 303, submitted.text
    job_id = submitted.headers["location"].rsplit("/", 1)[1]
    job = ctx.db.run(lambda s: s.get(Job, job_id))
    assert job is not None and job.credit_kind == "app" and job.seed == 7
    assert "/files/uploads/" in job.form_state_json and "voice.wav" in job.form_state_json
    assert api_balance(ctx, account.account_id, "app") == 5
    assert api_balance(ctx, account.account_id, "api") == 10
    page = await client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and 'data-poll="/jobs/' in page.text
    status = (await client.get(f"/jobs/{job_id}/status")).json()
    assert status["status"] == "processing" and status["stage"] == "queued"
    missing = await client.post("/playground", data={"csrf_token": token, "mode": "lipsync-image",
                                                      "image_url": "https://media.example.com/face.png"})
    assert missing.status_code == 422 and "audio" in missing.text


async def test_free_plan_refuses_720p_with_403_and_the_pages_say_so(
    client: httpx.AsyncClient, make_account: MakeAccount
) -> None:
    account = make_account(plan="tight")
    body = {"formState": {**IMAGE_BODY["formState"], "resolution": "720p"}}
    async with new_client(client) as api:
        refused = await api.post("/api/v1/lipsync-image", json=body, headers=account.headers)
    assert refused.status_code == 403 and refused.json()["error_code"] == "resolution_not_allowed"
    await web_login(client, account)
    credits = (await client.get("/credits")).text
    assert "resolution_not_allowed" in credits and "HTTP 403" in credits
    assert "<svg" in credits and "tight" in credits


async def test_one_account_never_sees_anothers_keys_jobs_or_files(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext
) -> None:
    owner, stranger = make_account(), make_account()
    async with new_client(client) as api:
        job_id = (await api.post("/api/v1/lipsync-image", json=IMAGE_BODY, headers=owner.headers)).json()["id"]
    output_key = f"outputs/{job_id}.mp4"
    (ctx.settings.storage_path / "outputs").mkdir(parents=True, exist_ok=True)
    (ctx.settings.storage_path / output_key).write_bytes(b"\x00" * 1000)
    assert ctx.db.run(lambda s: settle(s, ctx.prices, job_id, Outcome(status="completed", output_key=output_key)))
    owner_key_id = ctx.db.run(lambda s: keys.list_keys(s, owner.account_id))[0].id

    token = await web_login(client, stranger)
    assert job_id not in (await client.get("/jobs")).text
    assert owner.api_key[:11] not in (await client.get("/keys")).text
    assert (await client.get(f"/jobs/{job_id}")).status_code == 404
    assert (await client.get(f"/jobs/{job_id}/status")).status_code == 404
    assert (await client.post(f"/jobs/{job_id}/delete-output", data={"csrf_token": token})).status_code == 404
    assert (await client.post(f"/keys/{owner_key_id}/revoke", data={"csrf_token": token})).status_code == 404
    assert (ctx.settings.storage_path / output_key).exists()

    client.cookies.clear()
    token = await web_login(client, owner)
    page = (await client.get(f"/jobs/{job_id}")).text
    assert "<video" in page and "/files/outputs/" in page
    deleted = await client.post(f"/jobs/{job_id}/delete-output", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert not (ctx.settings.storage_path / output_key).exists()
    async with new_client(client) as api:
        job = (await api.get(f"/api/v1/jobs/{job_id}", headers=owner.headers)).json()
    assert job["status"] == "completed" and job["output"] is None
    assert ctx.db.run(lambda s: s.get(Job, job_id)).output_deleted_at is not None
    assert "<video" not in (await client.get(f"/jobs/{job_id}")).text


async def test_webhook_secret_reveal_rotate_and_a_signed_test_event(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext,
    receiver: WebhookReceiver,
) -> None:
    account = make_account()
    token = await web_login(client, account)
    revealed = await client.post("/webhooks/secret", data={"csrf_token": token, "action": "reveal"})
    first = re.search(r'value="(whsec_[^"]+)"', revealed.text).group(1)
    assert ctx.db.run(lambda s: s.get(Account, account.account_id)).webhook_secret == first
    rotated = await client.post("/webhooks/secret", data={"csrf_token": token, "action": "rotate"})
    second = re.search(r'value="(whsec_[^"]+)"', rotated.text).group(1)
    assert second != first

    receiver.script["/hook"] = [503]
    url = f"{receiver.url}/hook"
    for _ in range(2):
        sent = await client.post("/webhooks/test", data={"csrf_token": token, "url": url})
        assert sent.status_code == 303
    assert len(receiver.deliveries) == 2
    delivery = receiver.deliveries[-1]
    verify_webhook(second, delivery.headers, delivery.body, now=time.time())
    assert delivery.json["type"] == "test"
    page = (await client.get("/webhooks")).text
    assert re.findall(r'class="status-code">(\d+)<', page) == ["200", "503"]
    assert f'value="{url}"' in page  # remembered as the account's default

    bad = await client.post("/webhooks/test", data={"csrf_token": token, "url": "not a url"})
    assert bad.status_code == 422 and "url:" in bad.text


async def test_job_webhook_attempts_reported_by_the_dispatcher_are_listed(
    client: httpx.AsyncClient, make_account: MakeAccount, ctx: GatewayContext, orchestrator_nc,
) -> None:
    account = make_account()
    async with new_client(client) as api:
        job_id = (await api.post("/api/v1/lipsync-image", json=IMAGE_BODY, headers=account.headers)).json()["id"]
    sender = RecordingWebhookSender(results=[DeliveryResult(DeliveryOutcome.RETRYABLE, 500, "HTTP 500")])
    dispatcher = WebhookDispatcher(sender, RetrySchedule(delays_s=(0.2,), jitter=0.0))
    js = orchestrator_nc.jetstream()
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(js, stop))
    try:
        await dispatcher.enqueue(js, job_id, "https://hooks.example.com/x", "whsec_" + "A" * 32, b"{}")
        deadline = time.monotonic() + 15
        await web_login(client, account)
        while time.monotonic() < deadline:
            page = (await client.get("/webhooks")).text
            if len(re.findall(r'class="status-code">(\d+)<', page)) == 2:
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
    assert re.findall(r'class="status-code">(\d+)<', page) == ["200", "500"]
    assert f"/jobs/{job_id}" in page and "hooks.example.com" in page


async def test_signup_can_be_closed_by_the_operator(
    client: httpx.AsyncClient, ctx: GatewayContext
) -> None:
    token = csrf_of((await client.get("/signup")).text)
    ctx.settings.signup_enabled = False
    try:
        assert (await client.get("/signup")).status_code == 403
        email = f"closed-{uuid.uuid4().hex[:8]}@example.test"
        refused = await client.post("/signup", data={"email": email, "password": PASSWORD, "csrf_token": token})
        assert refused.status_code == 403 and "Sign-up is closed" in refused.text
        assert ctx.db.run(lambda s: s.query(Account).filter_by(email=email).count()) == 0
    finally:
        ctx.settings.signup_enabled = True


@pytest.mark.settings(login_max_failures_per_account=3, login_window_s=300)
async def test_a_throttled_login_form_says_how_long_to_wait(
    client: httpx.AsyncClient, ctx: GatewayContext, make_account: MakeAccount
) -> None:
    """The /login form goes through the throttled `log_in`: past the account's failure limit
    even the right password gets a 429 page that says so (Retry-After too), in Arabic as well."""
    account = make_account()
    token = csrf_of((await client.get("/login")).text)
    for _ in range(3):
        wrong = await client.post("/login", data={
            "email": account.email, "password": "wrong password", "csrf_token": token})
        assert wrong.status_code == 401 and "Invalid email or password" in wrong.text
    refused = await client.post("/login", data={
        "email": account.email, "password": account.password, "csrf_token": token})
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 300
    assert 'role="alert">Too many attempts. Try again in 5 min.<' in refused.text
    assert "lipsyncd_session" not in refused.headers.get("set-cookie", "")
    client.cookies.set("lipsyncd_lang", "ar")
    arabic = await client.post("/login", data={
        "email": account.email, "password": account.password, "csrf_token": token})
    assert arabic.status_code == 429 and "حاول مرة أخرى بعد 5 دقيقة" in arabic.text


@pytest.mark.settings(signup_max_per_ip=2, signup_window_s=600)
async def test_signups_are_throttled_per_address_in_the_database(
    client: httpx.AsyncClient, ctx: GatewayContext
) -> None:
    # PostgreSQL's database is shared by this module's tests: start from no counted sign-ups.
    ctx.db.run(lambda s: s.query(LoginFailure).filter(LoginFailure.key.like("signup:%")).delete(
        synchronize_session=False))
    emails = [f"flood-{i}-{uuid.uuid4().hex[:6]}@example.test" for i in range(3)]
    for email in emails[:2]:
        async with new_client(client) as browser:
            token = csrf_of((await browser.get("/signup")).text)
            made = await browser.post("/signup", data={"email": email, "password": PASSWORD, "csrf_token": token})
            assert made.status_code == 303, made.text
    async with new_client(client) as browser:
        token = csrf_of((await browser.get("/signup")).text)
        refused = await browser.post("/signup", data={"email": emails[2], "password": PASSWORD, "csrf_token": token})
    assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 600
    assert "Too many attempts. Try again in 10 min." in refused.text
    assert ctx.db.run(lambda s: s.query(Account).filter_by(email=emails[2]).count()) == 0
    rows = ctx.db.run(lambda s: s.query(LoginFailure).filter(LoginFailure.key.like("signup:%")).all())
    assert [row.failures for row in rows] == [2]
