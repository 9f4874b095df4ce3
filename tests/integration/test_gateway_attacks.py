"""Attacks on a real gateway process over loopback: over-size and endless
bodies, floods of bad logins, fuzzed requests. After each, the gateway still answers, a
job can still be submitted, and nothing was stored or charged for the attack."""
from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.integration.live_gateway import PASSWORD, LiveGateway, start_live_gateway

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
UPLOAD_CAP_BYTES = 1 * MiB
IMAGE_BODY = {
    "formState": {
        "image_url": "https://media.example.com/face.png",
        "audio": "https://media.example.com/voice.wav",
        "prompt": "calm",
    }
}


@pytest.fixture
def live(tmp_path: Path, nats_url: str) -> Iterator[LiveGateway]:
    yield from start_live_gateway(
        tmp_path, nats_url,
        {"LIPSYNCD_MAX_UPLOAD_BYTES": str(UPLOAD_CAP_BYTES), "LIPSYNCD_ALLOW_PRIVATE_URLS": "1"},
    )


def submit_job(live: LiveGateway, key: str) -> httpx.Response:
    return httpx.post(
        f"{live.url}/api/v1/lipsync-image", json=IMAGE_BODY,
        headers={"Authorization": f"Bearer {key}"}, timeout=30,
    )


async def stream_chunked(
    port: int, path: str, headers: dict[str, str], total_bytes: int,
    chunk_bytes: int = 64 * 1024, prefix: bytes = b"", filler: bytes = b"{",
) -> tuple[int, int]:
    """POST an endless-looking chunked body over a raw socket until the server answers or
    hangs up. Returns (HTTP status, bytes the client managed to send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    if prefix:
        writer.write(f"{len(prefix):x}\r\n".encode() + prefix + b"\r\n")
    chunk = f"{chunk_bytes:x}\r\n".encode() + filler * chunk_bytes + b"\r\n"
    sent = 0
    status_line = asyncio.ensure_future(reader.readline())
    try:
        while sent < total_bytes and not status_line.done():
            writer.write(chunk)
            try:
                await asyncio.wait_for(writer.drain(), 5)
            except (ConnectionError, asyncio.TimeoutError):
                break
            sent += chunk_bytes
        line = await asyncio.wait_for(status_line, 10)
    finally:
        writer.close()
    assert line.startswith(b"HTTP/1.1 "), line
    return int(line.split()[1]), sent


@pytest.mark.parametrize(
    ("path", "with_key", "statuses"),
    [
        ("/api/v1/lipsync-image", False, {413}),
        ("/api/v1/lipsync-image", True, {413}),
        ("/auth/login", False, {413}),
        ("/api/v1/uploads", False, {401}),  # the key is checked before any byte is read
    ],
)
async def test_endless_body_is_refused_as_it_streams(
    live: LiveGateway, path: str, with_key: bool, statuses: set[int]
) -> None:
    email, key = live.make_account()
    headers = {"Content-Type": "application/json"}
    if with_key:
        headers["Authorization"] = f"Bearer {key}"
    before = live.rss_bytes()
    started = time.monotonic()
    status, sent = await stream_chunked(live.port, path, headers, total_bytes=100 * MiB)
    elapsed_s = time.monotonic() - started
    grown = live.rss_bytes() - before
    assert status in statuses
    assert sent < 100 * MiB, "the whole 100 MB was accepted before the answer"
    assert elapsed_s < 10
    assert grown < 8 * MiB, f"gateway RSS grew by {grown / MiB:.1f} MiB"
    assert live.healthy()
    assert submit_job(live, key).status_code == 200


async def test_oversize_upload_with_a_valid_key_is_413_and_stores_nothing(
    live: LiveGateway,
) -> None:
    _email, key = live.make_account()
    bearer = {"Authorization": f"Bearer {key}"}
    files = {"file": ("big.wav", b"RIFF" + bytes(UPLOAD_CAP_BYTES + 100 * 1024), "audio/wav")}
    declared = httpx.post(f"{live.url}/api/v1/uploads", files=files, headers=bearer, timeout=30)
    assert declared.status_code == 413
    assert declared.json()["error_code"] == "payload_too_large"

    # The same with no Content-Length: the limit is met by the count of streamed bytes.
    status, _sent = await stream_chunked(
        live.port, "/api/v1/uploads",
        {**bearer, "Content-Type": "multipart/form-data; boundary=xyz"}, total_bytes=4 * MiB,
        prefix=b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF", filler=b"\0",
    )
    assert status == 413
    uploads = live.home / "storage" / "uploads"
    assert not uploads.exists() or not any(uploads.rglob("*")), "an over-size upload was kept"

    small = httpx.post(
        f"{live.url}/api/v1/uploads", files={"file": ("ok.wav", b"RIFF" + bytes(1000))},
        headers=bearer, timeout=30,
    )
    assert small.status_code == 201, small.text
    assert submit_job(live, key).status_code == 200


async def test_a_flood_of_bad_logins_keeps_memory_bounded_and_jobs_flowing(
    tmp_path: Path, nats_url: str
) -> None:
    """40 concurrent wrong passwords: each argon2id check costs 64 MiB, so unbounded they
    cost ~1.5 GiB (measured with the limit set to 40); at most
    LIPSYNCD_MAX_CONCURRENT_PASSWORD_CHECKS (default 2) run at once."""
    env = {"LIPSYNCD_LOGIN_MAX_FAILURES_PER_ACCOUNT": "1000",
           "LIPSYNCD_LOGIN_MAX_FAILURES_PER_IP": "1000"}
    with contextmanager(start_live_gateway)(tmp_path, nats_url, env) as live:
        email, key = live.make_account(api_credits=100_000)
        before = live.rss_bytes()
        peak = before
        flood_done = asyncio.Event()

        async def sample_rss() -> None:
            nonlocal peak
            while not flood_done.is_set():
                peak = max(peak, live.rss_bytes())
                await asyncio.sleep(0.02)

        async def submit_meanwhile(http: httpx.AsyncClient) -> list[float]:
            took = []
            while not flood_done.is_set():
                started = time.monotonic()
                answer = await http.post("/api/v1/lipsync-image", json=IMAGE_BODY,
                                         headers={"Authorization": f"Bearer {key}"})
                assert answer.status_code == 200, answer.text
                took.append(time.monotonic() - started)
                await asyncio.sleep(0.1)
            return took

        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=live.url, timeout=120, limits=limits) as http:
            sampler = asyncio.create_task(sample_rss())
            jobs = asyncio.create_task(submit_meanwhile(http))
            await asyncio.sleep(0.2)
            answers = await asyncio.gather(*(
                http.post("/auth/login", json={"email": email, "password": f"wrong {n}"})
                for n in range(40)
            ))
            flood_done.set()
            await sampler
            submit_times = await jobs
        assert [a.status_code for a in answers] == [401] * 40
        grown = peak - before
        assert grown < 200 * MiB, f"gateway RSS peaked {grown / MiB:.0f} MiB above its start"
        assert len(submit_times) >= 3 and max(submit_times) < 5.0, submit_times
        good = httpx.post(f"{live.url}/auth/login", json={"email": email, "password": PASSWORD})
        assert good.status_code == 200
        print(f"flood: RSS +{grown / MiB:.0f} MiB, {len(submit_times)} jobs submitted meanwhile, "
              f"slowest {max(submit_times):.2f} s")


@pytest.mark.parametrize("trusted", [False, True])
def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    tmp_path: Path, nats_url: str, trusted: bool
) -> None:
    env = {"LIPSYNCD_LOGIN_MAX_FAILURES_PER_IP": "3",
           "LIPSYNCD_TRUSTED_PROXIES": "127.0.0.1" if trusted else ""}
    with contextmanager(start_live_gateway)(tmp_path, nats_url, env) as live:
        def bad_login(n: int, forwarded_for: str) -> httpx.Response:
            return httpx.post(
                f"{live.url}/auth/login", headers={"X-Forwarded-For": forwarded_for},
                json={"email": f"nobody-{n}@example.test", "password": "x"}, timeout=30,
            )

        first = [bad_login(n, f"203.0.113.{n}").status_code for n in range(3)]
        fourth = bad_login(3, "203.0.113.200")
        assert first == [401, 401, 401]
        if trusted:  # each forwarded address has its own count
            assert fourth.status_code == 401
            assert [bad_login(n, "203.0.113.7").status_code for n in range(4)] == [401] * 3 + [429]
        else:  # a spoofed header cannot buy fresh attempts: the peer is counted
            assert fourth.status_code == 429 and int(fourth.headers["Retry-After"]) > 0


def test_state_under_home_is_the_owners_only(live: LiveGateway) -> None:
    _email, key = live.make_account()
    uploaded = httpx.post(
        f"{live.url}/api/v1/uploads", files={"file": ("a.wav", b"RIFF" + bytes(1000))},
        headers={"Authorization": f"Bearer {key}"}, timeout=30,
    )
    assert uploaded.status_code == 201
    assert stat.S_IMODE(live.home.stat().st_mode) == 0o700
    created = list(live.home.rglob("*"))
    assert any(path.is_file() for path in created), "the upload should be under the home"
    for path in created:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is readable by others"
