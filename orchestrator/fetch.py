"""Safe downloading of job inputs (SPEC section 4): every URL hop is resolved once, every
resolved address is checked against the SSRF rules, and the connection goes to that pinned
address; size, time and redirects are capped and the bytes must sniff as the expected kind.
Media is always downloaded to a file first; no URL is ever handed to FFmpeg/PyAV."""
from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import time
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Awaitable, Callable, Mapping, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from postprocess.storage import InvalidKey, Storage, verify_signature

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


class MediaKind(str, Enum):
    VIDEO = "video"
    AUDIO = "audio"
    IMAGE = "image"
    MASK = "mask"

    @property
    def noun(self) -> str:
        return "mask image" if self is MediaKind.MASK else self.value


@dataclass(frozen=True)
class FetchedMedia:
    path: Path
    size_bytes: int
    content_type: str  # as the server declared it ("" when unknown)
    format: str        # sniffed from the bytes: mp4, mov, webm, wav, mp3, png, jpeg...


class FetchError(Exception):
    """A download that failed for a reason the user can act on; `code` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Fetcher(Protocol):
    async def fetch(self, url: str, dest: Path, kind: MediaKind, max_bytes: int) -> FetchedMedia:
        ...


# --- Address rules ----------------------------------------------------------------------

class AddressRefused(Exception):
    def __init__(self, ip: IPAddress, reason: str) -> None:
        mapped = ip.ipv4_mapped if isinstance(ip, IPv6Address) else None
        shown = f"::ffff:{mapped}" if mapped else str(ip)  # not Python 3.11's ::ffff:7f00:1
        super().__init__(f"the address {shown} {reason}")
        self.ip = ip
        self.reason = reason


class HostUnresolvable(Exception):
    def __init__(self, host: str) -> None:
        super().__init__(f"the host {host} could not be found")
        self.host = host


METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_PRIVATE_NETWORKS: tuple[IPv4Network | IPv6Network, ...] = tuple(
    ip_network(n) for n in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",  # RFC 1918, CGNAT
        "fc00::/7", "fec0::/10",                                          # ULA, old site-local
    )
)
_THIS_NETWORK = ip_network("0.0.0.0/8")
_BROADCAST = ip_address("255.255.255.255")
_NAT64_WELL_KNOWN = ip_network("64:ff9b::/96")
_NAT64_LOCAL_USE = ip_network("64:ff9b:1::/48")  # RFC 8215: embedding depends on the prefix
_IPV4_COMPATIBLE = ip_network("::/96")


def embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, NAT64, Teredo)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64_WELL_KNOWN or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def address_refusal(ip: IPAddress | str, *, allow_private: bool) -> str | None:
    """Why a connection to `ip` is refused ("is private", ...), or None if it is allowed.

    Link-local, metadata, unspecified, multicast, broadcast and reserved addresses are
    always refused; loopback, private and other non-public ranges only without allow_private.
    """
    ip = ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(ip, IPv6Address) and ip.scope_id:
        ip = IPv6Address(str(ip).split("%", 1)[0])
    if ip in METADATA_ADDRESSES:
        return "is a cloud metadata address"
    if isinstance(ip, IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return address_refusal(inner, allow_private=allow_private)
        if ip in _NAT64_LOCAL_USE:
            return None if allow_private else "is not a public address"
    if ip.is_link_local:
        return "is link-local"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "is unspecified"
    if ip.is_multicast:
        return "is multicast"
    if ip == _BROADCAST:
        return "is a broadcast address"
    if ip.is_loopback:
        return None if allow_private else "is a loopback address"
    if any(ip in net for net in _PRIVATE_NETWORKS if net.version == ip.version):
        return None if allow_private else "is private"
    if ip.is_reserved:
        return "is reserved"
    if not ip.is_global:  # documentation, benchmarking, IETF protocol ranges
        return None if allow_private else "is not a public address"
    return None


async def resolve_host(host: str, port: int) -> list[str]:
    """All addresses of `host` (the system resolver, run off the event loop)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostUnresolvable(host) from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_allowed_address(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = resolve_host
) -> IPAddress:
    """Resolve `host`, refuse it if ANY of its addresses is refused, return one to pin."""
    addresses = [ip_address(a.split("%", 1)[0]) for a in await resolver(host, port)]
    if not addresses:
        raise HostUnresolvable(host)
    for ip in addresses:
        reason = address_refusal(ip, allow_private=allow_private)
        if reason is not None:
            raise AddressRefused(ip, reason)
    return addresses[0]


def pinned_request_parts(url: httpx.URL, ip: IPAddress) -> tuple[httpx.URL, dict[str, str], dict]:
    """The URL to connect to (host replaced by the checked IP), plus the Host header and
    the TLS server name so that virtual hosting and certificate checks use the real host."""
    host = url.raw_host.decode("ascii")
    headers = {"Host": url.netloc.decode("ascii")}
    extensions: dict = {}
    if url.scheme == "https":
        try:
            ip_address(host)
        except ValueError:
            extensions["sni_hostname"] = host
    return url.copy_with(host=str(ip)), headers, extensions


# --- Checking the bytes ------------------------------------------------------------------

_VIDEO_FORMATS = frozenset({"mp4", "mov", "3gp", "webm", "mkv", "avi", "mpegts"})
_IMAGE_FORMATS = frozenset({"png", "jpeg", "webp", "gif", "bmp"})
# Audio may arrive in any container that can carry a soundtrack (people pass a video as
# the voice); the decoder later checks that there really is an audio stream.
ACCEPTED_FORMATS: Mapping[MediaKind, frozenset[str]] = {
    MediaKind.VIDEO: _VIDEO_FORMATS,
    MediaKind.AUDIO: frozenset({"wav", "mp3", "ogg", "flac", "m4a", "aac"}) | _VIDEO_FORMATS,
    MediaKind.IMAGE: _IMAGE_FORMATS,
    MediaKind.MASK: _IMAGE_FORMATS,
}
_FORMAT_DESCRIPTIONS = {
    "mp4": "an MP4 file", "mov": "a QuickTime file", "3gp": "a 3GP file", "webm": "a WebM file",
    "mkv": "a Matroska file", "avi": "an AVI file", "mpegts": "an MPEG-TS file",
    "wav": "WAV audio", "mp3": "MP3 audio", "ogg": "an Ogg file", "flac": "FLAC audio",
    "m4a": "M4A audio", "aac": "AAC audio", "png": "a PNG image", "jpeg": "a JPEG image",
    "webp": "a WebP image", "gif": "a GIF image", "bmp": "a BMP image",
}
SNIFF_BYTES = 512


def sniff_format(head: bytes) -> str | None:
    """The container/format named by the magic numbers in a file's first bytes, or None."""
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return "m4a"
        if brand == b"qt  ":
            return "mov"
        return "3gp" if brand.startswith(b"3g") else "mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):  # QuickTime without ftyp
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:64] else "mkv"
    if head[:4] in (b"RIFF", b"RF64"):
        return {b"AVI ": "avi", b"WAVE": "wav", b"WEBP": "webp"}.get(head[8:12])
    simple_magics = (
        (b"OggS", "ogg"), (b"fLaC", "flac"), (b"ID3", "mp3"), (b"\x89PNG\r\n\x1a\n", "png"),
        (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    )
    for magic, fmt in simple_magics:
        if head.startswith(magic):
            return fmt
    if head[:2] == b"BM" and head[6:10] == b"\0\0\0\0":
        return "bmp"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    if len(head) >= 3 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:  # ADTS sync with layer bits 00: AAC (FFF1 / FFF9)
            return "aac"
        # MPEG audio frame sync, a layer other than 00, a bitrate index other than 1111
        if head[1] & 0xE0 == 0xE0 and head[1] & 0x06 and head[2] >> 4 != 0xF:
            return "mp3"
    return None


def describe_format(fmt: str) -> str:
    return _FORMAT_DESCRIPTIONS.get(fmt, fmt)


def _size_text(n_bytes: int) -> str:
    """A limit of 200 MiB reads "200 MB"; other limits are shown in decimal units."""
    if n_bytes and n_bytes % (1024 * 1024) == 0:
        return f"{n_bytes // (1024 * 1024)} MB"
    for unit_bytes, unit in ((1_000_000, "MB"), (1000, "kB")):
        if n_bytes >= unit_bytes:
            return f"{n_bytes / unit_bytes:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n_bytes} bytes"


def too_large(kind: MediaKind, max_bytes: int) -> FetchError:
    return FetchError(
        "media_too_large", f"Could not download {kind.noun}: the file is larger than "
        f"{_size_text(max_bytes)}"
    )


def check_media(path: Path, size_bytes: int, content_type: str, kind: MediaKind) -> FetchedMedia:
    """Refuse empty files and bytes that are not the expected kind of media."""
    if size_bytes == 0:
        raise FetchError("empty_media", f"Could not download {kind.noun}: the file is empty")
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    fmt = sniff_format(head)
    if fmt is None or fmt not in ACCEPTED_FORMATS[kind]:
        declared = content_type.split(";", 1)[0].strip().lower()
        if fmt is not None:
            got = describe_format(fmt)
        elif declared and declared != "application/octet-stream":
            got = declared
        elif head.lstrip()[:1] == b"<":
            got = "HTML or text"
        else:
            got = "data of an unknown format"
        expected = {"video": "a video", "audio": "audio", "image": "an image", "mask": "an image"}
        raise FetchError(
            "unsupported_media",
            f"The {kind.noun} URL did not return {expected[kind.value]} (got {got})",
        )
    return FetchedMedia(path=path, size_bytes=size_bytes, content_type=content_type, format=fmt)


# --- The real fetcher -------------------------------------------------------------------

def refusal_text(host: str, exc: AddressRefused) -> str:
    """Why `host` was refused, without the addresses a name resolved to: those are answers
    of the internal DNS, not for the caller. An address literal is the caller's own."""
    try:
        ip_address(host.strip("[]"))
    except ValueError:
        return f"the host {host} resolves to an address that {exc.reason}"
    return str(exc)


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 120.0
    max_redirects: int = 5


_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class HttpFetcher:
    """Downloads over HTTP(S) with the SSRF rules applied to every hop."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        limits: FetchLimits = FetchLimits(),
        resolver: Resolver = resolve_host,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        user_agent: str = "lipsyncd-fetch/0.1",
    ) -> None:
        self.allow_private = allow_private
        self.limits = limits
        self.resolver = resolver
        self.transport = transport  # tests inject httpx.MockTransport
        self.verify = verify        # tests pass a context that trusts their own CA
        self.user_agent = user_agent

    async def fetch(self, url: str, dest: Path, kind: MediaKind, max_bytes: int) -> FetchedMedia:
        try:
            content_type, size_bytes = await asyncio.wait_for(
                self._download(url, dest, kind, max_bytes), self.limits.total_timeout_s
            )
            return check_media(dest, size_bytes, content_type, kind)
        except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
            dest.unlink(missing_ok=True)
            raise FetchError(
                "download_timeout", f"Could not download {kind.noun}: the server took too long "
                f"(limit {self.limits.total_timeout_s:g} s)"
            ) from exc
        except httpx.HTTPError as exc:
            dest.unlink(missing_ok=True)
            raise FetchError(
                "download_failed", f"Could not download {kind.noun}: the connection failed"
            ) from exc
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    async def _download(
        self, url: str, dest: Path, kind: MediaKind, max_bytes: int
    ) -> tuple[str, int]:
        timeout = httpx.Timeout(
            self.limits.read_timeout_s, connect=self.limits.connect_timeout_s
        )
        async with httpx.AsyncClient(
            transport=self.transport, verify=self.verify, follow_redirects=False,
            trust_env=False, timeout=timeout,
        ) as client:
            current = self._parse(url, kind)
            for _hop in range(self.limits.max_redirects + 1):
                ip = await self._checked_address(current, kind)
                target, headers, extensions = pinned_request_parts(current, ip)
                headers["User-Agent"] = self.user_agent
                # Compressed replies are refused (see _stream_to_file): ask for none.
                headers["Accept-Encoding"] = "identity"
                request = client.build_request(
                    "GET", target, headers=headers, extensions=extensions
                )
                response = await client.send(request, stream=True)
                try:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECT_STATUSES and location:
                        current = self._parse(str(current.join(location)), kind)
                        continue
                    if not 200 <= response.status_code < 300:
                        raise FetchError(
                            "download_failed",
                            f"Could not download {kind.noun}: HTTP {response.status_code}",
                        )
                    size_bytes = await self._stream_to_file(response, dest, kind, max_bytes)
                    return response.headers.get("content-type", ""), size_bytes
                finally:
                    await response.aclose()
        raise FetchError(
            "download_failed", f"Could not download {kind.noun}: too many redirects "
            f"(more than {self.limits.max_redirects})"
        )

    def _parse(self, url: str, kind: MediaKind) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise FetchError(
                "url_not_allowed", f"Could not download {kind.noun}: invalid URL"
            ) from exc
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise FetchError(
                "url_not_allowed",
                f"Could not download {kind.noun}: only http and https URLs are supported",
            )
        return parsed

    async def _checked_address(self, url: httpx.URL, kind: MediaKind) -> IPAddress:
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            return await resolve_allowed_address(
                host, port, allow_private=self.allow_private, resolver=self.resolver
            )
        except AddressRefused as exc:
            raise FetchError(
                "url_not_allowed", f"Could not download {kind.noun}: {refusal_text(host, exc)}"
            ) from exc
        except HostUnresolvable as exc:
            raise FetchError("download_failed", f"Could not download {kind.noun}: {exc}") from exc

    @staticmethod
    async def _stream_to_file(
        response: httpx.Response, dest: Path, kind: MediaKind, max_bytes: int
    ) -> int:
        # httpx would expand any Content-Encoding, stacked ones too, a whole chunk at a time
        # before the cap is counted (252 bytes of "gzip, gzip" -> 50 MiB): media is already
        # compressed, so only identity is accepted (and then nothing is decoded).
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise FetchError(
                "download_failed",
                f"Could not download {kind.noun}: the server sent it compressed "
                f"(Content-Encoding: {encoding[:40]}); only uncompressed downloads are accepted",
            )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise too_large(kind, max_bytes)
        size_bytes = 0
        with open(dest, "wb") as out:
            async for chunk in response.aiter_bytes():
                size_bytes += len(chunk)
                if size_bytes > max_bytes:
                    raise too_large(kind, max_bytes)
                out.write(chunk)
        return size_bytes


# --- Our own uploads, and the test double ------------------------------------------------

class StorageShortcutFetcher:
    """Reads URLs under `<public_base_url>/files/` straight from storage (media uploaded to
    our gateway) and hands every other URL to `fallback`. With `signing_key`, the URL must
    carry a valid, unexpired signature, exactly as the gateway would demand over HTTP."""

    def __init__(
        self,
        storage: Storage,
        public_base_url: str,
        fallback: Fetcher,
        *,
        signing_key: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.prefix = public_base_url.rstrip("/") + "/files/"
        self.fallback = fallback
        self.signing_key = signing_key
        self.clock = clock

    async def fetch(self, url: str, dest: Path, kind: MediaKind, max_bytes: int) -> FetchedMedia:
        if not url.startswith(self.prefix):
            return await self.fallback.fetch(url, dest, kind, max_bytes)
        parts = urlsplit(url)
        key = unquote(parts.path[len(urlsplit(self.prefix).path):])
        query = parse_qs(parts.query)
        not_found = FetchError("download_failed", f"Could not download {kind.noun}: HTTP 404")
        if self.signing_key is not None and not verify_signature(
            key, query.get("expires", [""])[0], query.get("signature", [""])[0],
            self.signing_key, self.clock(),
        ):
            raise FetchError("download_failed", f"Could not download {kind.noun}: HTTP 403")
        try:
            if self.storage.size(key) > max_bytes:
                raise too_large(kind, max_bytes)
            await asyncio.to_thread(self._copy, key, dest)  # large files: keep the loop free
        except (FileNotFoundError, InvalidKey) as exc:
            dest.unlink(missing_ok=True)
            raise not_found from exc
        return check_media(dest, dest.stat().st_size, "", kind)

    def _copy(self, key: str, dest: Path) -> None:
        with self.storage.open_read(key) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)


@dataclass
class StaticFetcher:
    """Test double: serves fixed bytes per URL (or raises the FetchError given for it),
    with the same size and content checks as the real fetcher. Unknown URLs are HTTP 404."""

    responses: Mapping[str, bytes | FetchError]
    requested: list[str] = field(default_factory=list)

    async def fetch(self, url: str, dest: Path, kind: MediaKind, max_bytes: int) -> FetchedMedia:
        self.requested.append(url)
        body = self.responses.get(url)
        if isinstance(body, FetchError):
            raise body
        if body is None:
            raise FetchError("download_failed", f"Could not download {kind.noun}: HTTP 404")
        if len(body) > max_bytes:
            raise too_large(kind, max_bytes)
        dest.write_bytes(body)
        return check_media(dest, len(body), "", kind)
