"""Which addresses a URL given by a customer may lead notiflow to: public ones, and the private networks a
setting names. Task-file downloads and status callbacks both ask here, so a stranger's URL reaches the
same places whichever door it came in by.

Loopback, private, link-local (169.254.169.254, a cloud's metadata service), multicast and reserved
addresses are refused unless one of the given networks (CIDR) holds them. A host name is judged by every
address it resolves to, and the caller connects to one of those very addresses (`resolve`), or checks
the address it connected to (`check_address`): DNS may answer differently the second time.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import httpx

from models.errors import HostUnresolved, UrlRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def resolve(url: str, private_networks: Iterable[str], setting: str) -> tuple[httpx.URL, list[IPAddress]]:
    """`url` parsed, and the addresses its host resolves to, every one of them allowed.

    Raises UrlRefused for a URL that is not http(s) with a host, or whose host has an address that is
    not allowed (its message names `setting`, the one that allows chosen networks); HostUnresolved when
    the name does not resolve (which may pass: the caller decides).
    """
    try:
        parts = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UrlRefused("not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not parts.host:
        raise UrlRefused("only http(s) URLs with a host name are allowed")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = {info[4][0] for info in socket.getaddrinfo(parts.host, port, type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError) as exc:
        raise HostUnresolved(parts.host) from exc
    networks = list(private_networks)
    addresses = sorted((_ip(address) for address in found), key=lambda ip: (ip.version, int(ip)))
    for ip in addresses:
        _refuse(ip, parts.host, networks, setting)
    return parts, addresses


def check_address(address: str, host: str, private_networks: Iterable[str], setting: str) -> None:
    """Refuse (UrlRefused) the address a connection to `host` reached if it may not be reached."""
    _refuse(_ip(address), host, list(private_networks), setting)


def allowed(ip: IPAddress, private_networks: Iterable[str]) -> bool:
    if any(ip in ipaddress.ip_network(network, strict=False) for network in private_networks):
        return True
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local)


def _ip(address: str) -> IPAddress:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _refuse(ip: IPAddress, host: str, networks: list[str], setting: str) -> None:
    if not allowed(ip, networks):
        raise UrlRefused(
            f"host {host!r} is not a public address (loopback, private, link-local, multicast "
            f"and reserved addresses are refused; {setting} allows chosen networks)",
            host=host,
        )
