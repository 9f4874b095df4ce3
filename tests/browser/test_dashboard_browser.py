"""The dashboard in Debian's Chromium, headless, against the whole mesh (`make serve`):
sign up, create and copy a key, call the API with it, watch the job finish on /jobs, play
the video, revoke the key and see the API refuse it; the playground with uploads; forms
without the right CSRF token refused; every page rendered (laptop and phone widths, English
and Arabic) with no request leaving the service, screenshots under reports/screenshots/."""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.mesh import Mesh

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
JOB_TIMEOUT_MS = 300_000
PLAY_TIMEOUT_MS = 30_000
PAGES = ("/keys", "/credits", "/jobs", "/playground", "/webhooks", "/docs/quickstart")


def shoot(page: Any, folder: Path, name: str, phone: bool = True) -> None:
    page.screenshot(path=str(folder / f"{name}-laptop.png"), full_page=True)
    if phone:
        page.set_viewport_size(PHONE)
        page.screenshot(path=str(folder / f"{name}-phone.png"), full_page=True)
        page.set_viewport_size(LAPTOP)


def new_page(browser: Any, mesh: Mesh, locale: str = "en-US") -> tuple[Any, list[str]]:
    """A fresh browser context; every request to anything but the service is recorded and
    aborted, so a page that needs a CDN shows it."""
    context = browser.new_context(viewport=LAPTOP, locale=locale,
                                  extra_http_headers={"Accept-Language": locale})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=mesh.url)
    outside: list[str] = []

    def guard(route: Any) -> None:
        if route.request.url.startswith((mesh.url, "data:", "blob:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    return context.new_page(), outside


def sign_up(page: Any, mesh: Mesh) -> str:
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    page.goto(f"{mesh.url}/signup")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("form[action='/signup'] button[type=submit]")
    page.wait_for_url(f"{mesh.url}/keys")
    return email


def wait_until_played(page: Any) -> dict[str, float]:
    page.evaluate("() => { const v = document.getElementById('player'); v.muted = true; return v.play(); }")
    page.wait_for_function(
        "() => { const v = document.getElementById('player'); return v.readyState >= 2 && v.currentTime > 0.4; }",
        timeout=PLAY_TIMEOUT_MS,
    )
    return page.evaluate(
        "() => { const v = document.getElementById('player'); v.pause();"
        " return {readyState: v.readyState, currentTime: v.currentTime, width: v.videoWidth}; }"
    )


def test_sign_up_create_key_call_the_api_play_the_video_then_revoke(
    browser: Any, browser_mesh: Mesh, short_media: dict[str, Path], screenshots: Path
) -> None:
    mesh = browser_mesh
    page, outside = new_page(browser, mesh)
    page.goto(f"{mesh.url}/")
    assert page.url.startswith(f"{mesh.url}/login")
    shoot(page, screenshots, "login")
    sign_up(page, mesh)

    page.fill("#key-name", "browser test")
    page.click("form[action='/keys'] button[type=submit]")
    key = page.input_value("#new-key")
    assert key.startswith("sk_")
    page.click("button.copy")
    page.wait_for_selector("button.copy:text('Copied')", timeout=5_000)
    assert page.evaluate("navigator.clipboard.readText()") == key
    shoot(page, screenshots, "keys-new-key")

    bearer = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=mesh.url, headers=bearer, timeout=60) as api:
        urls = {}
        for role, path in short_media.items():
            with path.open("rb") as handle:
                answer = api.post("/api/v1/uploads", files={"file": (path.name, handle)})
            assert answer.status_code == 201, answer.text
            urls[role] = answer.json()["url"]
        submitted = api.post("/api/v1/lipsync-image", json={"formState": {**urls, "seed": 3}})
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["id"]

    page.goto(f"{mesh.url}/jobs")
    row = page.locator(f"#job-{job_id}")
    assert row.is_visible() and row.get_attribute("data-status") == "processing"
    # The page polls the job every 2 s and reloads itself when it has finished.
    page.wait_for_selector(f"#job-{job_id}[data-status=completed]", timeout=JOB_TIMEOUT_MS)
    shoot(page, screenshots, "jobs")
    page.click(f"#job-{job_id} a.mono")
    page.wait_for_url(f"{mesh.url}/jobs/{job_id}")
    played = wait_until_played(page)
    assert played["readyState"] >= 2 and played["currentTime"] > 0.4 and played["width"] > 0
    shoot(page, screenshots, "job-playing")
    assert page.get_attribute("#download", "href").startswith(f"{mesh.url}/files/outputs/")

    page.goto(f"{mesh.url}/keys")
    shoot(page, screenshots, "keys")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("form[action$='/revoke'] button")
    page.wait_for_url(f"{mesh.url}/keys?revoked=1")
    assert page.locator("td .badge.failed").count() == 1
    with httpx.Client(base_url=mesh.url, headers=bearer, timeout=30) as api:
        refused = api.get(f"/api/v1/jobs/{job_id}")
    assert refused.status_code == 401
    assert outside == []
    page.context.close()


def test_playground_submits_uploads_with_app_credits_and_plays_the_result(
    browser: Any, browser_mesh: Mesh, short_media: dict[str, Path], screenshots: Path
) -> None:
    mesh = browser_mesh
    page, outside = new_page(browser, mesh)
    sign_up(page, mesh)
    page.goto(f"{mesh.url}/playground")
    page.select_option("#mode", "lipsync-image")
    assert page.locator("#video_file").is_hidden()  # only the chosen mode's inputs
    page.set_input_files("#image_file", str(short_media["image"]))
    page.set_input_files("#audio_file", str(short_media["audio"]))
    page.fill("#seed", "11")
    page.fill("#prompt", "calm")
    shoot(page, screenshots, "playground")
    page.click("#playground button[type=submit]")
    page.wait_for_url(f"{mesh.url}/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector("#job[data-status=completed]", timeout=JOB_TIMEOUT_MS)
    played = wait_until_played(page)
    assert played["currentTime"] > 0.4

    page.goto(f"{mesh.url}/credits")
    assert page.text_content("#app-credits") == "55"  # free plan's 60, less the 5 s minimum
    assert page.text_content("#api-credits") == "60"
    assert page.locator("svg.chart rect[fill='#e08a00']").count() >= 2  # a bar and the legend
    assert job_id[:8] in page.text_content("main")
    shoot(page, screenshots, "credits")
    assert outside == []
    page.context.close()


def test_forms_without_the_right_csrf_token_are_refused(
    browser: Any, browser_mesh: Mesh, screenshots: Path
) -> None:
    mesh = browser_mesh
    page, _ = new_page(browser, mesh)
    sign_up(page, mesh)
    # A form like another site would post: the session cookie goes along, no token does.
    page.evaluate("""() => { const f = document.createElement('form'); f.method = 'post';
        f.action = '/keys'; const i = document.createElement('input'); i.name = 'name';
        i.value = 'forged'; f.appendChild(i); document.body.appendChild(f); f.submit(); }""")
    page.wait_for_load_state()
    assert "Reload the page and try again" in page.text_content("main")
    shoot(page, screenshots, "csrf-refused", phone=False)
    page.goto(f"{mesh.url}/keys")
    page.eval_on_selector("form[action='/keys'] input[name=csrf_token]", "el => el.value = '0'.repeat(64)")
    page.fill("#key-name", "wrong token")
    with page.expect_navigation() as navigation:
        page.click("form[action='/keys'] button[type=submit]")
    assert navigation.value.status == 403
    page.goto(f"{mesh.url}/keys")
    assert "forged" not in page.text_content("main") and "wrong token" not in page.text_content("main")
    page.context.close()


def test_make_serve_says_where_the_dashboard_is_and_a_throttled_login_says_so(
    browser: Any, browser_mesh: Mesh, screenshots: Path
) -> None:
    mesh = browser_mesh
    printed = "\n".join(mesh.output)
    assert f"Dashboard: {mesh.url}/  (log in as admin@localhost; its password is in " in printed
    assert str(mesh.home / "admin_password") in printed
    page, _ = new_page(browser, mesh)
    email = sign_up(page, mesh)
    page.click("form[action='/logout'] button[type=submit]")
    page.wait_for_url(f"{mesh.url}/login")
    for password in ("wrong 1", "wrong 2", "wrong 3", PASSWORD):
        page.fill("#email", email)
        page.fill("#password", password)
        with page.expect_navigation() as navigation:
            page.click("form[action='/login'] button[type=submit]")
    assert navigation.value.status == 429  # even the right password, until the window ends
    assert 0 < int(navigation.value.headers["retry-after"]) <= 900
    alert = page.text_content("[role=alert]")
    assert alert == "Too many attempts. Try again in 15 min.", alert
    shoot(page, screenshots, "login-throttled", phone=False)
    page.context.close()


@pytest.mark.parametrize("language", ["en", "ar"])
def test_every_page_renders_offline_at_laptop_and_phone_width(
    browser: Any, browser_mesh: Mesh, screenshots: Path, language: str
) -> None:
    mesh = browser_mesh
    page, outside = new_page(browser, mesh, locale="en-US")
    sign_up(page, mesh)
    # The switch (a cookie), not the browser's language, picks Arabic here.
    if language != "en":
        with page.expect_navigation():
            page.select_option("#lang-switch", language)
        assert page.url == f"{mesh.url}/keys"  # back where the switch was used
    for path in PAGES:
        page.goto(f"{mesh.url}{path}")
        assert page.get_attribute("html", "dir") == ("rtl" if language == "ar" else "ltr")
        assert page.locator("a[href='/docs']").count() >= 1
        # nothing wider than the phone screen but tables that scroll inside their box
        page.set_viewport_size(PHONE)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        page.set_viewport_size(LAPTOP)
        assert overflow <= 1, f"{path} scrolls sideways on a phone ({overflow}px)"
        shoot(page, screenshots, f"{language}{path.replace('/', '-')}")
    if language == "ar":
        assert "مفاتيح API" in page.text_content("nav")
    for path, ready in (("/docs", ".swagger-ui .info .title"), ("/redoc", "[role=navigation], .api-content")):
        page.goto(f"{mesh.url}{path}")
        page.wait_for_selector(ready, timeout=20_000)
        assert "lipsyncd" in page.text_content("body")
        shoot(page, screenshots, f"{language}-api{path.replace('/', '-')}", phone=False)
    assert outside == []
    page.context.close()


def test_arabic_is_chosen_from_the_browsers_language(
    browser: Any, browser_mesh: Mesh, screenshots: Path
) -> None:
    page, _ = new_page(browser, browser_mesh, locale="ar")
    page.goto(f"{browser_mesh.url}/login")
    assert page.get_attribute("html", "dir") == "rtl" and page.get_attribute("html", "lang") == "ar"
    assert "تسجيل الدخول" in page.text_content("h1")
    shoot(page, screenshots, "ar-login")
    page.context.close()


def test_webhooks_page_reveals_the_secret_and_lists_a_signed_test_delivery(
    browser: Any, browser_mesh: Mesh, screenshots: Path
) -> None:
    from postprocess.signing import verify_webhook
    from tests.servers import WebhookReceiver

    mesh = browser_mesh
    receiver = WebhookReceiver()
    try:
        page, _ = new_page(browser, mesh)
        sign_up(page, mesh)
        page.goto(f"{mesh.url}/webhooks")
        page.click("form[action='/webhooks/secret'] input[value=reveal] ~ button")
        secret = page.input_value("#whsec")
        assert secret.startswith("whsec_")
        page.fill("#webhook-url", f"{receiver.url}/hook")
        page.click("form[action='/webhooks/test'] button")
        page.wait_for_selector("tr.delivery td.status-code:text('200')")
        delivery = receiver.deliveries[-1]
        verify_webhook(secret, delivery.headers, delivery.body, now=time.time())
        shoot(page, screenshots, "webhooks")
        page.context.close()
    finally:
        receiver.close()
