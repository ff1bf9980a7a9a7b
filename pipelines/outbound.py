"""Outbound HTTP to URLs that users or admins supply: webhooks, model base URLs, agent tools.

Such a URL must not reach the machine's own services or the cloud network behind it
(SSRF). A host name can be spelled many ways (`127.1`, `2130706433`, `0x7f000001`,
`[::ffff:127.0.0.1]`, `localhost`, or any DNS name that answers with a private address), so
the check is made on the addresses the name resolves to, never on its spelling. Every
answer must be allowed, and the request then connects to exactly the address that was
checked: the URL's host is replaced by the IP, while the `Host` header and TLS SNI (and so
certificate checks) keep the name. A DNS answer that changes between check and connect
(rebinding) therefore cannot switch the target. Userinfo is dropped (httpx would turn it
into an `Authorization` header) and redirects are never followed.

Link-local addresses (the cloud metadata service among them) and unroutable ones are
always refused; private and loopback ones only when the operator's policy allows them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from pipelines.errors import HostNotResolved, UrlNotAllowed

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> addresses; socket.getaddrinfo by default, replaceable in tests.
Resolver = Callable[[str, int], Sequence[str]]

METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"),
                                ipaddress.ip_address("fd00:ec2::254")})
# "This network" (RFC 1122): Linux connects 0.x.y.z to the local host.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Carrier-grade NAT space (RFC 6598): neither global nor "private" to the ipaddress module.
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_SCHEMES = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Which non-public destinations the operator allows.

    `allow_private` admits private, loopback, shared (100.64/10) and unique-local
    addresses for every host; `allowed_hosts` admits them for the named hosts only (names
    or IP literals, compared lower-case). Neither ever admits link-local, metadata,
    multicast, reserved or unspecified addresses.
    """

    allow_private: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, allow_private: bool, allowed_hosts: Iterable[str]) -> OutboundPolicy:
        return cls(allow_private, frozenset(host.strip().lower() for host in allowed_hosts))


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL and the address the request will connect to."""

    url: httpx.URL  # normalised, without userinfo or fragment
    address: Address

    @property
    def pinned_url(self) -> httpx.URL:
        """The URL with its host replaced by the checked address."""
        return self.url.copy_with(host=str(self.address))

    def request_headers(self, headers: dict[str, str]) -> dict[str, str]:
        """`headers` plus the `Host` the name calls for (the pinned URL only has the IP)."""
        return {**headers, "Host": self.url.netloc.decode("ascii")}


def refusal(address: Address, policy: OutboundPolicy, host: str = "") -> str | None:
    """Why `address` may not be contacted under `policy`, or None when it may."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        address = embedded
    if address in METADATA_ADDRESSES or address.is_link_local:
        return "a link-local or cloud metadata address"
    # IPv6's "reserved" (::/8) holds ::1, which is loopback, so only IPv4's counts here.
    if (address.is_unspecified or address.is_multicast or address in _THIS_NETWORK
            or (address.version == 4 and address.is_reserved)):
        return "not a routable unicast address"
    if address.is_global:
        return None
    if address.is_loopback or address.is_private or address in _SHARED:
        if policy.allow_private or host.lower() in policy.allowed_hosts:
            return None
        return "a private or loopback address"
    return "a reserved address"


def parse_url(url: str) -> httpx.URL:
    """`url` normalised: http(s) only, a host required, userinfo and fragment dropped."""
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError) as exc:
        raise UrlNotAllowed(f"The URL is not valid: {exc}.") from None
    if parsed.scheme not in _SCHEMES:
        raise UrlNotAllowed("The URL must start with http:// or https://.")
    if not parsed.host:
        raise UrlNotAllowed("The URL has no host.")
    return httpx.URL(scheme=parsed.scheme, host=parsed.host, port=parsed.port,
                     raw_path=parsed.raw_path)


def check(url: str, policy: OutboundPolicy, resolve: Resolver | None = None) -> Target:
    """Parse, resolve and check `url`; raises UrlNotAllowed with a reason a user can act on."""
    parsed = parse_url(url)
    port = parsed.port or _SCHEMES[parsed.scheme]
    try:
        answers = (resolve or _getaddrinfo)(parsed.host, port)
    except (OSError, UnicodeError):
        raise HostNotResolved(f"The host '{parsed.host}' does not resolve.") from None
    return _pin(parsed, answers, policy)


async def check_async(url: str, policy: OutboundPolicy) -> Target:
    """`check` without blocking the event loop on DNS."""
    parsed = parse_url(url)
    port = parsed.port or _SCHEMES[parsed.scheme]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(parsed.host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise HostNotResolved(f"The host '{parsed.host}' does not resolve.") from None
    return _pin(parsed, [str(info[4][0]) for info in infos], policy)


def post(target: Target, *, content: bytes, headers: dict[str, str], timeout_s: float,
         client: httpx.Client | None = None) -> httpx.Response:
    """POST to the pinned address of `target`, without following redirects."""
    extensions: dict[str, Any] = {}
    if target.url.scheme == "https":
        # Certificate and SNI checks use the name, although we connect to the address.
        extensions["sni_hostname"] = target.url.host
    request_args: dict[str, Any] = {
        "content": content, "headers": target.request_headers(headers),
        "timeout": timeout_s, "extensions": extensions, "follow_redirects": False}
    if client is not None:
        return client.post(target.pinned_url, **request_args)
    with httpx.Client(trust_env=False) as own:
        return own.post(target.pinned_url, **request_args)


def _pin(parsed: httpx.URL, answers: Sequence[str], policy: OutboundPolicy) -> Target:
    addresses = [ipaddress.ip_address(answer.split("%", 1)[0]) for answer in answers]
    if not addresses:
        raise HostNotResolved(f"The host '{parsed.host}' does not resolve.")
    for address in addresses:
        reason = refusal(address, policy, parsed.host)
        if reason is not None:
            raise UrlNotAllowed(f"The host '{parsed.host}' resolves to {reason}, which "
                                "outbound requests may not reach.")
    return Target(url=parsed, address=addresses[0])


def _getaddrinfo(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
