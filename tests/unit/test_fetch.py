"""Unit tests for orchestrator/fetch.py: the address rules, content sniffing, and the HTTP
fetcher driven through httpx.MockTransport with a fake resolver (no network)."""
from __future__ import annotations

import httpx
import pytest

from orchestrator.fetch import (
    AddressRefused,
    FetchError,
    FetchLimits,
    HttpFetcher,
    MediaKind,
    StaticFetcher,
    StorageShortcutFetcher,
    address_refusal,
    check_media,
    resolve_allowed_address,
    sniff_format,
)
from postprocess.storage import MemoryStorage, sign_url
from tests.media import media_dir

MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 64
WAV_HEAD = b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\x00" * 64
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64
HTML = b"<!doctype html><html><body>Not found</body></html>"

# --- address rules -----------------------------------------------------------------------

ALWAYS_REFUSED = [
    ("169.254.169.254", "is a cloud metadata address"),
    ("fd00:ec2::254", "is a cloud metadata address"),
    ("100.100.100.200", "is a cloud metadata address"),
    ("169.254.1.1", "is link-local"),
    ("fe80::1", "is link-local"),
    ("::ffff:169.254.169.254", "is a cloud metadata address"),
    ("::ffff:169.254.10.10", "is link-local"),
    ("::ffff:a9fe:a9fe", "is a cloud metadata address"),  # same address, hex-spelled
    ("64:ff9b::169.254.169.254", "is a cloud metadata address"),  # NAT64
    ("2002:a9fe:a9fe::1", "is a cloud metadata address"),  # 6to4
    ("::169.254.169.254", "is a cloud metadata address"),  # IPv4-compatible
    ("0.0.0.0", "is unspecified"),
    ("0.1.2.3", "is unspecified"),
    ("::", "is unspecified"),
    ("224.0.0.1", "is multicast"),
    ("ff02::1", "is multicast"),
    ("255.255.255.255", "is a broadcast address"),
    ("240.0.0.1", "is reserved"),
]

PRIVATE_ONLY = [
    ("127.0.0.1", "is a loopback address"),
    ("127.255.0.9", "is a loopback address"),
    ("::1", "is a loopback address"),
    ("::ffff:127.0.0.1", "is a loopback address"),
    ("64:ff9b::7f00:1", "is a loopback address"),
    ("10.0.0.5", "is private"),
    ("172.16.3.4", "is private"),
    ("172.31.255.255", "is private"),
    ("192.168.1.1", "is private"),
    ("100.64.0.1", "is private"),
    ("fc00::1", "is private"),
    ("fd12:3456::1", "is private"),
    ("::ffff:10.0.0.5", "is private"),
    ("2002:c0a8:0101::1", "is private"),  # 6to4 of 192.168.1.1
    ("192.0.2.10", "is not a public address"),  # documentation range
    ("198.18.0.1", "is not a public address"),  # benchmarking
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111",
          "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:0808:0808::1"]


@pytest.mark.parametrize("ip,reason", ALWAYS_REFUSED)
@pytest.mark.parametrize("allow_private", [False, True])
def test_link_local_metadata_and_special_addresses_are_always_refused(ip, reason, allow_private):
    assert address_refusal(ip, allow_private=allow_private) == reason


@pytest.mark.parametrize("ip,reason", PRIVATE_ONLY)
def test_private_and_loopback_addresses_are_refused_by_default(ip, reason):
    assert address_refusal(ip, allow_private=False) == reason


@pytest.mark.parametrize("ip,reason", PRIVATE_ONLY)
def test_private_and_loopback_addresses_are_allowed_with_allow_private(ip, reason):
    assert address_refusal(ip, allow_private=True) is None


@pytest.mark.parametrize("ip", PUBLIC)
@pytest.mark.parametrize("allow_private", [False, True])
def test_public_addresses_are_allowed(ip, allow_private):
    assert address_refusal(ip, allow_private=allow_private) is None


def fake_resolver(table: dict[str, list[str]]):
    async def resolve(host: str, port: int) -> list[str]:
        return table[host]
    return resolve


async def test_a_host_is_refused_if_any_of_its_addresses_is_refused():
    resolver = fake_resolver({"mixed.example": ["8.8.8.8", "10.1.2.3"]})
    with pytest.raises(AddressRefused) as info:
        await resolve_allowed_address("mixed.example", 443, allow_private=False, resolver=resolver)
    assert str(info.value) == "the address 10.1.2.3 is private"


async def test_decimal_ip_spelling_is_checked_after_resolution():
    # "2130706433" is 127.0.0.1 for inet_aton; the real resolver must see through it.
    with pytest.raises(AddressRefused):
        await resolve_allowed_address("2130706433", 80, allow_private=False)
    with pytest.raises(AddressRefused):
        await resolve_allowed_address("0x7f.1", 80, allow_private=False)


# --- sniffing ----------------------------------------------------------------------------

@pytest.mark.parametrize("head,fmt", [
    (MP4_HEAD, "mp4"),
    (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ", "mov"),
    (b"\x00\x00\x00\x1cftypM4A \x00\x00\x00\x00M4A mp42isom", "m4a"),
    (b"\x00\x00\x00\x14ftyp3gp4\x00\x00\x00\x00", "3gp"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm\x42\x87", "webm"),
    (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska", "mkv"),
    (b"RIFF\x00\x00\x00\x00AVI LIST", "avi"),
    (WAV_HEAD, "wav"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
    (b"\xff\xfb\x90\x64\x00\x00", "mp3"),
    (b"\xff\xf1\x50\x80\x00\x1f", "aac"),
    (b"\xff\xf9\x50\x80\x00\x1f", "aac"),
    (b"OggS\x00\x02\x00\x00", "ogg"),
    (b"fLaC\x00\x00\x00\x22", "flac"),
    (PNG_HEAD, "png"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "jpeg"),
    (b"GIF89a\x01\x00\x01\x00", "gif"),
    (b"BM\x36\x00\x0c\x00\x00\x00\x00\x00\x36\x00\x00\x00", "bmp"),
    ((b"\x47" + b"\x00" * 187) * 3, "mpegts"),
    (HTML, None),
    (b"just some text", None),
    (b"", None),
])
def test_sniff_format_recognises_magic_numbers(head, fmt):
    assert sniff_format(head) == fmt


def test_sniff_format_recognises_the_shared_test_media():
    media = media_dir()
    assert sniff_format((media / "talk_a.mp4").read_bytes()[:512]) == "mp4"
    assert sniff_format((media / "speech_en_1.wav").read_bytes()[:512]) == "wav"
    assert sniff_format((media / "portrait_photo_a.png").read_bytes()[:512]) == "png"


def test_check_media_refuses_html_served_as_audio(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(HTML)
    with pytest.raises(FetchError) as info:
        check_media(path, len(HTML), "text/html; charset=utf-8", MediaKind.AUDIO)
    assert info.value.code == "unsupported_media"
    assert info.value.message == "The audio URL did not return audio (got text/html)"


def test_check_media_names_the_wrong_kind_it_got(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(PNG_HEAD)
    with pytest.raises(FetchError) as info:
        check_media(path, len(PNG_HEAD), "", MediaKind.VIDEO)
    assert info.value.message == "The video URL did not return a video (got a PNG image)"


def test_check_media_accepts_a_video_container_as_audio(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(MP4_HEAD)
    assert check_media(path, len(MP4_HEAD), "video/mp4", MediaKind.AUDIO).format == "mp4"


def test_check_media_refuses_empty_files(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(b"")
    with pytest.raises(FetchError) as info:
        check_media(path, 0, "audio/wav", MediaKind.AUDIO)
    assert info.value.code == "empty_media"


# --- HttpFetcher over a mock transport ---------------------------------------------------

class Recorder:
    def __init__(self, routes):
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.routes(request)


def make_fetcher(routes, table, **kwargs) -> tuple[HttpFetcher, Recorder]:
    recorder = Recorder(routes)
    fetcher = HttpFetcher(transport=httpx.MockTransport(recorder),
                          resolver=fake_resolver(table), **kwargs)
    return fetcher, recorder


async def test_fetch_connects_to_the_checked_ip_with_host_header_and_sni(tmp_path):
    fetcher, rec = make_fetcher(
        lambda r: httpx.Response(200, content=WAV_HEAD, headers={"content-type": "audio/wav"}),
        {"media.example.com": ["93.184.216.34"]},
    )
    got = await fetcher.fetch("https://media.example.com/a.wav?x=1", tmp_path / "a",
                              MediaKind.AUDIO, 10_000)
    request = rec.requests[0]
    assert request.url.host == "93.184.216.34"
    assert request.url.query == b"x=1"
    assert request.headers["host"] == "media.example.com"
    assert request.extensions["sni_hostname"] == "media.example.com"
    assert (got.format, got.size_bytes, got.content_type) == ("wav", len(WAV_HEAD), "audio/wav")
    assert (tmp_path / "a").read_bytes() == WAV_HEAD


async def test_fetch_refuses_a_host_resolving_to_a_private_address(tmp_path):
    fetcher, rec = make_fetcher(lambda r: httpx.Response(200, content=WAV_HEAD),
                                {"intranet.example": ["10.0.0.5"]})
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("http://intranet.example/a.wav", tmp_path / "a", MediaKind.AUDIO,
                            10_000)
    assert info.value.code == "url_not_allowed"
    assert info.value.message == (
        "Could not download audio: the host intranet.example resolves to an address that is private"
    )
    assert "10.0.0.5" not in info.value.message  # the internal DNS answer is not revealed
    assert rec.requests == []


async def test_fetch_checks_every_redirect_hop(tmp_path):
    def routes(request):
        if request.url.host == "93.184.216.34":
            return httpx.Response(302, headers={"location": "http://metadata.example/latest/"})
        return httpx.Response(200, content=b"secret")
    fetcher, rec = make_fetcher(routes, {"public.example": ["93.184.216.34"],
                                         "metadata.example": ["169.254.169.254"]},
                                allow_private=True)
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("http://public.example/v.mp4", tmp_path / "v", MediaKind.VIDEO, 10_000)
    assert info.value.code == "url_not_allowed"
    assert info.value.message.endswith(
        "the host metadata.example resolves to an address that is a cloud metadata address"
    )
    assert len(rec.requests) == 1


async def test_fetch_follows_relative_redirects_to_the_same_host(tmp_path):
    def routes(request):
        if request.url.path == "/old":
            return httpx.Response(301, headers={"location": "/new"})
        return httpx.Response(200, content=PNG_HEAD)
    fetcher, rec = make_fetcher(routes, {"img.example": ["93.184.216.34"]})
    got = await fetcher.fetch("https://img.example/old", tmp_path / "i", MediaKind.IMAGE, 10_000)
    assert got.format == "png"
    assert [r.url.path for r in rec.requests] == ["/old", "/new"]
    assert rec.requests[1].headers["host"] == "img.example"


async def test_fetch_gives_up_after_too_many_redirects(tmp_path):
    fetcher, rec = make_fetcher(lambda r: httpx.Response(302, headers={"location": "/again"}),
                                {"loop.example": ["93.184.216.34"]},
                                limits=FetchLimits(max_redirects=3))
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("https://loop.example/", tmp_path / "x", MediaKind.VIDEO, 10_000)
    assert info.value.code == "download_failed"
    assert "too many redirects" in info.value.message
    assert len(rec.requests) == 4


@pytest.mark.parametrize("url", ["ftp://example.com/a.mp4", "file:///etc/passwd",
                                 "gopher://x/", "not a url"])
async def test_fetch_refuses_other_schemes(tmp_path, url):
    fetcher, rec = make_fetcher(lambda r: httpx.Response(200), {})
    with pytest.raises(FetchError) as info:
        await fetcher.fetch(url, tmp_path / "x", MediaKind.VIDEO, 10_000)
    assert info.value.code == "url_not_allowed"


async def test_redirect_to_a_file_url_is_refused(tmp_path):
    fetcher, _ = make_fetcher(
        lambda r: httpx.Response(302, headers={"location": "file:///etc/passwd"}),
        {"x.example": ["93.184.216.34"]},
    )
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("https://x.example/", tmp_path / "x", MediaKind.VIDEO, 10_000)
    assert info.value.code == "url_not_allowed"


async def test_fetch_reports_http_errors_clearly(tmp_path):
    fetcher, _ = make_fetcher(lambda r: httpx.Response(404, content=HTML),
                              {"x.example": ["93.184.216.34"]})
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("https://x.example/a.mp3", tmp_path / "x", MediaKind.AUDIO, 10_000)
    assert (info.value.code, info.value.message) == ("download_failed",
                                                     "Could not download audio: HTTP 404")
    assert not (tmp_path / "x").exists()


async def test_fetch_refuses_a_declared_size_over_the_cap_before_reading(tmp_path):
    fetcher, _ = make_fetcher(
        lambda r: httpx.Response(200, content=MP4_HEAD + b"\x00" * 5000),
        {"x.example": ["93.184.216.34"]},
    )
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("https://x.example/v.mp4", tmp_path / "v", MediaKind.VIDEO,
                            4096)
    assert info.value.code == "media_too_large"


async def test_fetch_aborts_a_chunked_stream_past_the_cap(tmp_path):
    sent = {"chunks": 0}

    async def body():
        yield MP4_HEAD
        for _ in range(1000):
            sent["chunks"] += 1
            yield b"\x00" * 1024

    fetcher, _ = make_fetcher(lambda r: httpx.Response(200, content=body()),
                              {"x.example": ["93.184.216.34"]})
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("https://x.example/v.mp4", tmp_path / "v", MediaKind.VIDEO, 10 * 1024)
    assert info.value.code == "media_too_large"
    assert info.value.message == "Could not download video: the file is larger than 10.2 kB"
    assert sent["chunks"] < 1000
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("max_bytes,text", [
    (200 * 1024 * 1024, "200 MB"), (500_000_000, "500 MB"), (1_500_000, "1.5 MB"),
])
async def test_size_limits_are_phrased_for_people(tmp_path, max_bytes, text):
    fetcher = StaticFetcher({"u": b"\x00" * (max_bytes + 1)})
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("u", tmp_path / "x", MediaKind.AUDIO, max_bytes)
    assert info.value.code == "media_too_large"
    assert info.value.message == f"Could not download audio: the file is larger than {text}"


# --- the doubles and the storage shortcut ------------------------------------------------

async def test_static_fetcher_serves_bytes_and_applies_the_same_checks(tmp_path):
    fetcher = StaticFetcher({"https://x/a.wav": WAV_HEAD, "https://x/page": HTML})
    got = await fetcher.fetch("https://x/a.wav", tmp_path / "a", MediaKind.AUDIO, 10_000)
    assert got.format == "wav"
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("https://x/page", tmp_path / "b", MediaKind.AUDIO, 10_000)
    assert info.value.code == "unsupported_media"
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("https://x/missing", tmp_path / "c", MediaKind.AUDIO, 10_000)
    assert info.value.message == "Could not download audio: HTTP 404"
    assert fetcher.requested == ["https://x/a.wav", "https://x/page", "https://x/missing"]


async def test_own_upload_urls_are_read_from_storage_without_http(tmp_path):
    storage = MemoryStorage()
    storage.put_bytes("uploads/acct/face.png", PNG_HEAD)
    fallback = StaticFetcher({})
    fetcher = StorageShortcutFetcher(storage, "http://127.0.0.1:8000/", fallback)
    got = await fetcher.fetch("http://127.0.0.1:8000/files/uploads/acct/face.png",
                              tmp_path / "i", MediaKind.IMAGE, 10_000)
    assert got.format == "png" and (tmp_path / "i").read_bytes() == PNG_HEAD
    assert fallback.requested == []
    with pytest.raises(FetchError):
        await fetcher.fetch("https://elsewhere.example/x.png", tmp_path / "j", MediaKind.IMAGE,
                            10_000)
    assert fallback.requested == ["https://elsewhere.example/x.png"]


async def test_own_upload_urls_require_a_valid_signature_when_a_key_is_set(tmp_path):
    storage = MemoryStorage()
    storage.put_bytes("uploads/a.wav", WAV_HEAD)
    key = b"k" * 32
    fetcher = StorageShortcutFetcher(storage, "https://api.example", StaticFetcher({}),
                                     signing_key=key, clock=lambda: 1000.0)
    good = sign_url("https://api.example", "uploads/a.wav", key, 2000)
    assert (await fetcher.fetch(good, tmp_path / "a", MediaKind.AUDIO, 10_000)).format == "wav"
    expired = sign_url("https://api.example", "uploads/a.wav", key, 999)
    forged = sign_url("https://api.example", "uploads/a.wav", b"other", 2000)
    for url in (expired, forged, "https://api.example/files/uploads/a.wav"):
        with pytest.raises(FetchError) as info:
            await fetcher.fetch(url, tmp_path / "b", MediaKind.AUDIO, 10_000)
        assert info.value.message == "Could not download audio: HTTP 403"


async def test_own_upload_urls_cannot_escape_storage(tmp_path):
    fetcher = StorageShortcutFetcher(MemoryStorage(), "https://api.example", StaticFetcher({}))
    with pytest.raises(FetchError) as info:
        await fetcher.fetch("https://api.example/files/../../etc/passwd", tmp_path / "x",
                            MediaKind.AUDIO, 10_000)
    assert info.value.code == "download_failed"
