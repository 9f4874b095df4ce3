"""HttpFetcher against a real HTTP server on 127.0.0.1 (a stdlib server in a thread) with
the real system resolver: loopback rules, redirects, errors, size caps and timeouts."""
from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.fetch import FetchError, FetchLimits, HttpFetcher, MediaKind
from tests.media import MEDIA_DIR

pytestmark = pytest.mark.integration

FALLBACK_MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + bytes(4000)
FALLBACK_WAV = b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(4000)


def media_bytes(name: str, fallback: bytes) -> bytes:
    path = MEDIA_DIR / name
    return path.read_bytes() if path.is_file() else fallback


VIDEO = media_bytes("talk_a.mp4", FALLBACK_MP4)
AUDIO = media_bytes("speech_en_1.wav", FALLBACK_WAV)


class MediaHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # no keep-alive: each response ends with the connection

    def log_message(self, format, *args):  # keep pytest output quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str, length: bool = True,
              **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        routes = {
            "/talk.mp4": lambda: self._send(200, VIDEO, "video/mp4"),
            "/speech.wav": lambda: self._send(200, AUDIO, "audio/wav"),
            "/page": lambda: self._send(200, b"<!doctype html><p>hi</p>", "text/html; charset=utf8"),
            "/empty": lambda: self._send(200, b"", "audio/mpeg"),
            "/missing": lambda: self._send(404, b"not found", "text/plain"),
            "/big": lambda: self._send(200, FALLBACK_MP4 + bytes(3_000_000), "video/mp4"),
            "/big-undeclared": lambda: self._send(200, FALLBACK_MP4 + bytes(3_000_000),
                                                  "video/mp4", length=False),
            "/to-speech": lambda: self._send(302, b"", "text/plain", Location="/speech.wav"),
            "/to-metadata": lambda: self._send(
                302, b"", "text/plain", Location="http://169.254.169.254/latest/meta-data/"),
            "/to-mapped-metadata": lambda: self._send(
                302, b"", "text/plain", Location="http://[::ffff:169.254.169.254]/latest/"),
            "/loop": lambda: self._send(302, b"", "text/plain", Location="/loop"),
        }
        if self.path == "/slow":
            time.sleep(2.0)
            self._send(200, AUDIO, "audio/wav")
        elif self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.end_headers()
            self.wfile.write(AUDIO[:1000])
            self.wfile.flush()
            time.sleep(2.0)
        elif self.path in routes:
            routes[self.path]()
        else:
            self._send(404, b"", "text/plain")


@pytest.fixture(scope="module")
def server_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), MediaHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_loopback_download_works_when_private_urls_are_allowed(server_url, tmp_path):
    got = await HttpFetcher(allow_private=True).fetch(
        f"{server_url}/talk.mp4", tmp_path / "v", MediaKind.VIDEO, 50_000_000)
    assert (got.format, got.size_bytes, got.content_type) == ("mp4", len(VIDEO), "video/mp4")
    assert (tmp_path / "v").read_bytes() == VIDEO


async def test_loopback_download_is_refused_by_default(server_url, tmp_path):
    with pytest.raises(FetchError) as info:
        await HttpFetcher().fetch(f"{server_url}/talk.mp4", tmp_path / "v", MediaKind.VIDEO,
                                  50_000_000)
    assert info.value.code == "url_not_allowed"
    assert info.value.message == (
        "Could not download video: the address 127.0.0.1 is a loopback address"
    )
    assert not (tmp_path / "v").exists()


async def test_localhost_by_name_is_refused_by_default(server_url, tmp_path):
    url = server_url.replace("127.0.0.1", "localhost") + "/speech.wav"
    with pytest.raises(FetchError) as info:
        await HttpFetcher().fetch(url, tmp_path / "a", MediaKind.AUDIO, 50_000_000)
    assert info.value.code == "url_not_allowed"
    assert "loopback" in info.value.message


async def test_redirects_are_followed_and_rechecked(server_url, tmp_path):
    got = await HttpFetcher(allow_private=True).fetch(
        f"{server_url}/to-speech", tmp_path / "a", MediaKind.AUDIO, 50_000_000)
    assert got.format == "wav" and (tmp_path / "a").read_bytes() == AUDIO


@pytest.mark.parametrize("path", ["/to-metadata", "/to-mapped-metadata"])
async def test_redirect_to_cloud_metadata_is_refused_even_with_private_urls_allowed(
    server_url, tmp_path, path
):
    with pytest.raises(FetchError) as info:
        await HttpFetcher(allow_private=True).fetch(
            f"{server_url}{path}", tmp_path / "a", MediaKind.AUDIO, 50_000_000)
    assert info.value.code == "url_not_allowed"
    assert "169.254.169.254 is a cloud metadata address" in info.value.message


async def test_redirect_loops_are_cut_off(server_url, tmp_path):
    with pytest.raises(FetchError) as info:
        await HttpFetcher(allow_private=True).fetch(
            f"{server_url}/loop", tmp_path / "a", MediaKind.AUDIO, 50_000_000)
    assert info.value.code == "download_failed" and "too many redirects" in info.value.message


async def test_http_404_is_reported_clearly(server_url, tmp_path):
    with pytest.raises(FetchError) as info:
        await HttpFetcher(allow_private=True).fetch(
            f"{server_url}/missing", tmp_path / "a", MediaKind.AUDIO, 50_000_000)
    assert (info.value.code, info.value.message) == ("download_failed",
                                                     "Could not download audio: HTTP 404")


async def test_html_served_as_audio_is_unsupported_media(server_url, tmp_path):
    with pytest.raises(FetchError) as info:
        await HttpFetcher(allow_private=True).fetch(
            f"{server_url}/page", tmp_path / "a", MediaKind.AUDIO, 50_000_000)
    assert info.value.code == "unsupported_media"
    assert info.value.message == "The audio URL did not return audio (got text/html)"
    assert not (tmp_path / "a").exists()


async def test_audio_served_as_an_image_is_unsupported_media(server_url, tmp_path):
    with pytest.raises(FetchError) as info:
        await HttpFetcher(allow_private=True).fetch(
            f"{server_url}/speech.wav", tmp_path / "i", MediaKind.IMAGE, 50_000_000)
    assert info.value.message == "The image URL did not return an image (got WAV audio)"


async def test_empty_body_is_empty_media(server_url, tmp_path):
    with pytest.raises(FetchError) as info:
        await HttpFetcher(allow_private=True).fetch(
            f"{server_url}/empty", tmp_path / "a", MediaKind.AUDIO, 50_000_000)
    assert info.value.code == "empty_media"


@pytest.mark.parametrize("path", ["/big", "/big-undeclared"])
async def test_oversize_downloads_are_refused(server_url, tmp_path, path):
    with pytest.raises(FetchError) as info:
        await HttpFetcher(allow_private=True).fetch(
            f"{server_url}{path}", tmp_path / "v", MediaKind.VIDEO, 2 * 1024 * 1024)
    assert info.value.code == "media_too_large"
    assert info.value.message == "Could not download video: the file is larger than 2 MB"
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("path,limits", [
    ("/slow", FetchLimits(read_timeout_s=0.3)),
    ("/trickle", FetchLimits(read_timeout_s=30.0, total_timeout_s=0.5)),
])
async def test_slow_servers_time_out(server_url, tmp_path, path, limits):
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        await HttpFetcher(allow_private=True, limits=limits).fetch(
            f"{server_url}{path}", tmp_path / "a", MediaKind.AUDIO, 50_000_000)
    assert info.value.code == "download_timeout"
    assert time.monotonic() - started < 1.5
    assert not (tmp_path / "a").exists()


async def test_unreachable_port_is_a_download_failure(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError) as info:
        await HttpFetcher(allow_private=True).fetch(
            f"http://127.0.0.1:{port}/x", tmp_path / "a", MediaKind.AUDIO, 50_000_000)
    assert info.value.code == "download_failed"


# --- HTTPS: the connection is pinned to the IP, TLS still checks the real host name -------

@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An HTTPS server on 127.0.0.1 whose self-signed certificate names only media.test;
    yields (port, client SSL context trusting it, list of SNI names the server saw)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not available")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=media.test",
         "-addext", "subjectAltName=DNS:media.test"],
        check=True, capture_output=True,
    )
    seen_sni: list[str | None] = []
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), MediaHandler)
    server.daemon_threads = True
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client_ctx = ssl.create_default_context(cafile=str(cert))
    yield server.server_address[1], client_ctx, seen_sni
    server.shutdown()
    server.server_close()


def resolve_to_loopback(names: set[str]):
    async def resolve(host: str, port: int) -> list[str]:
        if host not in names:
            raise AssertionError(f"unexpected lookup of {host}")
        return ["127.0.0.1"]
    return resolve


async def test_https_goes_to_the_pinned_ip_with_sni_and_certificate_for_the_host(
    tls_server, tmp_path
):
    port, client_ctx, seen_sni = tls_server
    fetcher = HttpFetcher(allow_private=True, verify=client_ctx,
                          resolver=resolve_to_loopback({"media.test"}))
    got = await fetcher.fetch(f"https://media.test:{port}/speech.wav", tmp_path / "a",
                              MediaKind.AUDIO, 50_000_000)
    assert got.format == "wav" and (tmp_path / "a").read_bytes() == AUDIO
    assert seen_sni[-1] == "media.test"


async def test_https_certificate_must_match_the_requested_host(tls_server, tmp_path):
    port, client_ctx, _ = tls_server
    fetcher = HttpFetcher(allow_private=True, verify=client_ctx,
                          resolver=resolve_to_loopback({"other.test"}))
    with pytest.raises(FetchError) as info:
        await fetcher.fetch(f"https://other.test:{port}/speech.wav", tmp_path / "a",
                            MediaKind.AUDIO, 50_000_000)
    assert info.value.code == "download_failed"
