"""Which network addresses the service may connect to on a user's behalf (the SSRF rules of
SPEC section 4), shared by the input fetcher (orchestrator/fetch.py) and the webhook sender
(postprocess/webhooks.py): resolve a host once, refuse it if any address is refused, and
connect to that pinned address. It lives in proto/, the contract package every service
package already imports and which imports none of them, so neither user needs the other."""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import httpx

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


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


def refusal_text(host: str, exc: AddressRefused) -> str:
    """Why `host` was refused, without the addresses a name resolved to: those are answers
    of the internal DNS, not for the caller. An address literal is the caller's own."""
    try:
        ip_address(host.strip("[]"))
    except ValueError:
        return f"the host {host} resolves to an address that {exc.reason}"
    return str(exc)
