"""Browser tests: the mesh as `make serve` runs it (tests/e2e/mesh.py) and Debian's Chromium
driven headless by Playwright. The browser is never downloaded: `make chromium` installs
Debian's package, and a machine without /usr/bin/chromium skips these tests."""
from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.mesh import Mesh, start_mesh
from tests.servers import MEDIA_DIR

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SCREENSHOTS_DIR = Path(__file__).resolve().parents[2] / "reports" / "screenshots"
SHORT_AUDIO_S = 1.5


@pytest.fixture(scope="session")
def browser_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    # Every browser signs up from 127.0.0.1; an account is throttled after 3 wrong passwords.
    running = start_mesh(tmp_path_factory.mktemp("lipsyncd-browser-home"), {
        "LIPSYNCD_SIGNUP_MAX_PER_IP": "100", "LIPSYNCD_LOGIN_MAX_FAILURES_PER_ACCOUNT": "3",
    })
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread
    while it is open, which would stop every later asyncio test of the session."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (run `make chromium`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS_DIR


@pytest.fixture(scope="session")
def short_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A portrait and the first 1.5 s of a real speech recording, so a job is quick."""
    folder = tmp_path_factory.mktemp("browser-media")
    with wave.open(str(MEDIA_DIR / "speech_en_1.wav"), "rb") as source:
        params = source.getparams()
        frames = source.readframes(int(params.framerate * SHORT_AUDIO_S))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setparams(params)
        out.writeframes(frames)
    audio = folder / "speech_short.wav"
    audio.write_bytes(buffer.getvalue())
    return {"image": MEDIA_DIR / "portrait_photo_a.png", "audio": audio}
