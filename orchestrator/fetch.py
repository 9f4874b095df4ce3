"""Safe downloading of job inputs (SPEC section 4): every URL hop is resolved once, every
resolved address is checked against the SSRF rules, and the connection goes to that pinned
address; size, time and redirects are capped and the bytes must sniff as the expected kind.
Media is always downloaded to a file first; no URL is ever handed to FFmpeg/PyAV."""
from __future__ import annotations

import asyncio
import shutil
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from postprocess.storage import InvalidKey, Storage, verify_signature
from preprocess.sniff import (
    ACCEPTED_FORMATS,
    SNIFF_BYTES,
    MediaKind,
    describe_format,
    sniff_format,
)
from proto.addresses import (
    METADATA_ADDRESSES,
    AddressRefused,
    HostUnresolvable,
    IPAddress,
    Resolver,
    address_refusal,
    embedded_ipv4,
    pinned_request_parts,
    refusal_text,
    resolve_allowed_address,
    resolve_host,
)
from proto.vocabulary import ErrorCode

# Re-exported: callers and tests import the fetcher's rules from here.
__all__ = [
    "ACCEPTED_FORMATS",
    "SNIFF_BYTES",
    "MediaKind",
    "describe_format",
    "sniff_format",
    "METADATA_ADDRESSES",
    "AddressRefused",
    "HostUnresolvable",
    "IPAddress",
    "Resolver",
    "address_refusal",
    "embedded_ipv4",
    "pinned_request_parts",
    "resolve_allowed_address",
    "resolve_host",
    "FetchError",
    "FetchedMedia",
    "Fetcher",
    "FetchLimits",
    "HttpFetcher",
    "StaticFetcher",
    "StorageShortcutFetcher",
    "check_media",
    "too_large",
]


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


# --- Checking the bytes ------------------------------------------------------------------

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
        ErrorCode.MEDIA_TOO_LARGE, f"Could not download {kind.noun}: the file is larger than "
        f"{_size_text(max_bytes)}"
    )


def check_media(path: Path, size_bytes: int, content_type: str, kind: MediaKind) -> FetchedMedia:
    """Refuse empty files and bytes that are not the expected kind of media."""
    if size_bytes == 0:
        raise FetchError(ErrorCode.EMPTY_MEDIA, f"Could not download {kind.noun}: the file is empty")
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
            ErrorCode.UNSUPPORTED_MEDIA,
            f"The {kind.noun} URL did not return {expected[kind.value]} (got {got})",
        )
    return FetchedMedia(path=path, size_bytes=size_bytes, content_type=content_type, format=fmt)


# --- The real fetcher -------------------------------------------------------------------

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
        # One TLS context for every download (tests pass one that trusts their own CA): httpx
        # would otherwise build one per client, loading the CA bundle each time (tens of ms of
        # CPU per input, on a machine the job's analysis already keeps busy).
        self.verify = httpx.create_ssl_context(verify=verify, trust_env=False) if verify is True else verify
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
                ErrorCode.DOWNLOAD_TIMEOUT, f"Could not download {kind.noun}: the server took too long "
                f"(limit {self.limits.total_timeout_s:g} s)"
            ) from exc
        except httpx.HTTPError as exc:
            dest.unlink(missing_ok=True)
            raise FetchError(
                ErrorCode.DOWNLOAD_FAILED, f"Could not download {kind.noun}: the connection failed"
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
                            ErrorCode.DOWNLOAD_FAILED,
                            f"Could not download {kind.noun}: HTTP {response.status_code}",
                        )
                    size_bytes = await self._stream_to_file(response, dest, kind, max_bytes)
                    return response.headers.get("content-type", ""), size_bytes
                finally:
                    await response.aclose()
        raise FetchError(
            ErrorCode.DOWNLOAD_FAILED, f"Could not download {kind.noun}: too many redirects "
            f"(more than {self.limits.max_redirects})"
        )

    def _parse(self, url: str, kind: MediaKind) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise FetchError(
                ErrorCode.URL_NOT_ALLOWED, f"Could not download {kind.noun}: invalid URL"
            ) from exc
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise FetchError(
                ErrorCode.URL_NOT_ALLOWED,
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
                ErrorCode.URL_NOT_ALLOWED, f"Could not download {kind.noun}: {refusal_text(host, exc)}"
            ) from exc
        except HostUnresolvable as exc:
            raise FetchError(ErrorCode.DOWNLOAD_FAILED, f"Could not download {kind.noun}: {exc}") from exc

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
                ErrorCode.DOWNLOAD_FAILED,
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
        not_found = FetchError(ErrorCode.DOWNLOAD_FAILED, f"Could not download {kind.noun}: HTTP 404")
        if self.signing_key is not None and not verify_signature(
            key, query.get("expires", [""])[0], query.get("signature", [""])[0],
            self.signing_key, self.clock(),
        ):
            raise FetchError(ErrorCode.DOWNLOAD_FAILED, f"Could not download {kind.noun}: HTTP 403")
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
            raise FetchError(ErrorCode.DOWNLOAD_FAILED, f"Could not download {kind.noun}: HTTP 404")
        if len(body) > max_bytes:
            raise too_large(kind, max_bytes)
        dest.write_bytes(body)
        return check_media(dest, len(body), "", kind)
