"""The address rules for every outbound connection the service makes to a host it was given (SPEC §11, §13).

Webhook URLs now; SFTP hosts and partner endpoints obey the same rules. A host is resolved and every
one of its addresses checked; the connection is then made to one of those very addresses (so a name
that re-resolves elsewhere meanwhile, DNS rebinding, is never reached). Public addresses only, unless
`allow_private` (WEBHOOK_ALLOW_PRIVATE: local development, tests) also allows loopback, private and
shared ones; link-local (cloud metadata), unspecified, multicast and reserved addresses never. One
refused address refuses the host: which one a resolver hands out next is not ours to pick.

A refusal is one plain sentence about the host, never naming it (a URL may carry a token); a caller
that words its refusals its own way (webhooks.py) does so by `AddressRefused.reason`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

RESOLVE_TIMEOUT_SECONDS = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
CGNAT = ipaddress.ip_network("100.64.0.0/10")
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# What an address is, worst first; and a host that has no address.
LINK_LOCAL, SPECIAL, PRIVATE, PUBLIC = "link-local", "special", "private", "public"
UNRESOLVED = "unresolved"
REFUSALS = {
    LINK_LOCAL: "The host resolves to a link-local address, which is never allowed.",
    SPECIAL: "The host resolves to an address that cannot be connected to.",
    PRIVATE: "The host resolves to a loopback, private or shared address; only public addresses are allowed.",
    UNRESOLVED: "The host could not be resolved.",
}


class AddressRefused(Exception):
    """The host must not be connected to; `reason` is LINK_LOCAL, SPECIAL, PRIVATE or UNRESOLVED."""

    def __init__(self, reason: str) -> None:
        super().__init__(REFUSALS[reason])
        self.reason = reason


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to: IPv4-mapped, IPv4-compatible, NAT64 or 6to4 forms."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in network for network in NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d (deprecated IPv4-compatible)
        return ipaddress.IPv4Address(int(ip))
    return None


def _kind(ip: IPAddress) -> str:
    if ip.is_link_local:
        return LINK_LOCAL
    if ip.is_loopback:  # before "reserved": ::1 is inside the reserved ::/8
        return PRIVATE
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved or (ip.version == 4 and ip in THIS_NETWORK):
        return SPECIAL
    if ip.version == 6 and ip.teredo is not None:  # tunnelled to an address it hides
        return SPECIAL
    if ip.is_private or (ip.version == 4 and ip in CGNAT) or not ip.is_global:
        return PRIVATE
    if ip.version == 6 and ip.is_site_local:
        return PRIVATE
    return PUBLIC


def address_kind(address: str) -> str:
    """link-local, special, private or public: what the address is, IPv4 forms inside IPv6 included."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a scoped IPv6 address: its zone is no escape
    if ip.version == 6:
        embedded = _embedded_ipv4(ip)
        if embedded is not None and ip.sixtofour is None:
            return _kind(embedded)  # mapped, compatible, NAT64: the packets go to that IPv4 address
        if embedded is not None:  # 6to4: through a relay, to the IPv4 address; the worse of both
            return min((_kind(embedded), _kind(ip)), key=(LINK_LOCAL, SPECIAL, PRIVATE, PUBLIC).index)
    return _kind(ip)


def refusal(address: str, *, allow_private: bool) -> str | None:
    """Why `address` must not be connected to (LINK_LOCAL, SPECIAL or PRIVATE), or None when it may."""
    kind = address_kind(address)
    if kind == PUBLIC or (kind == PRIVATE and allow_private):
        return None
    return kind


_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="address-guard-dns")


def _lookup(host: str, port: int) -> list[str]:
    """The host's addresses (an IP literal is its own), in the resolver's order; AddressRefused if none."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise AddressRefused(UNRESOLVED) from None
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise AddressRefused(UNRESOLVED)
    return addresses


def _checked(addresses: list[str], allow_private: bool) -> list[str]:
    for address in addresses:
        reason = refusal(address, allow_private=allow_private)
        if reason is not None:
            raise AddressRefused(reason)
    return addresses


def allowed_addresses(
    host: str, port: int, *, allow_private: bool, timeout: float = RESOLVE_TIMEOUT_SECONDS
) -> list[str]:
    """Every address of `host` (an ASCII name or IP literal, no brackets), each allowed, in the resolver's
    order; AddressRefused otherwise. The name lookup is bounded by `timeout` (the system resolver has no
    timeout of its own to pass). Connect to one of these, never to the name."""
    future = _resolver.submit(_lookup, host, port)
    try:
        addresses = future.result(timeout=timeout)
    except FutureTimeout:
        raise AddressRefused(UNRESOLVED) from None
    return _checked(addresses, allow_private)


async def allowed_addresses_async(host: str, port: int, *, allow_private: bool) -> list[str]:
    """`allowed_addresses` for a caller on an event loop that bounds the whole connection attempt itself."""
    addresses = await asyncio.get_running_loop().run_in_executor(_resolver, _lookup, host, port)
    return _checked(addresses, allow_private)
