"""Which hosts a source named by an untrusted client (the HTTP API) may make the server connect to.

Cameras live on private networks, so private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) stay
reachable; the server's own loopback, link-local (169.254/16, fe80::/10), unspecified, multicast and
broadcast addresses and cloud metadata services do not. The host is resolved as FFmpeg would resolve it
(getaddrinfo: `2130706433` and `127.1` are 127.0.0.1) and every address it resolves to must pass, with
IPv4 embedded in IPv6 (`::ffff:127.0.0.1`, NAT64, 6to4) unwrapped. The check runs before each connection
(sources re-check at every reconnect), but FFmpeg resolves the name again itself, so a DNS answer that
changes in between (rebinding) is not caught; HLS segment URLs are not checked at all.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from cliplive.models.errors import InputError

METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")}
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[..., list]


class HostRefused(InputError):
    """A source whose host is (or resolves to) an address untrusted clients may not reach."""


def refused_reason(address: str) -> str | None:
    """Why an IP address may not be reached (loopback, link-local, ...), or None when it may."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in NAT64 else None)
        if embedded is not None:
            return refused_reason(str(embedded))
    if ip in METADATA:
        return "a cloud metadata address"
    for test, what in (("is_loopback", "loopback"), ("is_link_local", "link-local"), ("is_unspecified", "unspecified"),
                       ("is_multicast", "multicast")):
        if getattr(ip, test):
            return f"a {what} address"
    if isinstance(ip, ipaddress.IPv4Address) and (ip in THIS_NETWORK or ip == ipaddress.IPv4Address("255.255.255.255")):
        return "not a host address"
    return None


def check_host(url: str, resolve: Resolver = socket.getaddrinfo) -> None:
    """Refuse (HostRefused) a network URL whose host does not resolve, or resolves to any refused address."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise HostRefused(f"source URL is not valid: {e}") from None
    if not host:
        raise HostRefused("source URL has no host")
    try:
        infos = resolve(host, port or 0, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as e:
        raise HostRefused(f"source host {host!r} does not resolve: {e}") from None
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # without an IPv6 zone id
        why = refused_reason(address)
        if why is not None:
            raise HostRefused(f"source host {host!r} is {why} ({address}): the server's config does not allow local sources")
    if not infos:
        raise HostRefused(f"source host {host!r} does not resolve")
