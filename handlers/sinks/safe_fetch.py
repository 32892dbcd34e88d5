"""Fetching URLs that arrive from outside (image URLs in callbacks and poll answers)
without letting them reach the relay's own network: an SSRF guard.

The check sits in the connection layer, after DNS resolution, on every connection the
client opens: ``GuardedBackend.connect_tcp`` resolves the host itself, refuses when
any address is loopback, private, link-local, multicast, reserved or unspecified
(IPv4, IPv6, and IPv4 inside IPv6: mapped, compatible, 6to4, NAT64), and connects to
the address it checked, so a DNS answer that changes between a check and the connect
(rebinding) cannot slip through. TLS still verifies the certificate against the host
name (httpcore passes the origin's name as SNI). Redirects are never followed and
proxies from the environment are ignored, so no hop escapes the check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

#: ``(host, port)`` → the IP addresses (text) to connect to; tests inject their own
Resolver = Callable[[str, int], Awaitable[list[str]]]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddress(httpcore.ConnectError):
    """The host resolved to an address the guard refuses; ``address_class`` says why
    (``loopback``, ``private``, ``link_local``, ``multicast``, ``reserved``,
    ``unspecified``)."""

    def __init__(self, host: str, address: str, address_class: str) -> None:
        super().__init__(f"{host} resolves to a {address_class} address ({address})")
        self.host = host
        self.address = address
        self.address_class = address_class


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer (``getaddrinfo``), as address texts."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4 or NAT64 address leads to."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_class(text: str) -> str | None:
    """Why ``text`` (an IP address) must not be fetched, or None when it is public."""
    try:
        address: IPAddress = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return "reserved"  # not an address at all: refuse rather than guess
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # the very same IPv4 host
            return address_class(str(address.ipv4_mapped))
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = address_class(str(embedded))
            if inner is not None:
                return inner
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link_local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("reserved", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return name
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, checks, then connects by address."""

    def __init__(
        self, resolver: Resolver, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def _addresses(self, host: str, port: int, limit_s: float | None) -> list[str]:
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            pass
        else:
            return [host]  # an address literal: nothing to resolve
        try:
            async with asyncio.timeout(limit_s):
                found = await self._resolver(host, port)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        if not found:
            raise httpcore.ConnectError(f"{host} has no address")
        return found

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._addresses(host, port, timeout)
        for address in addresses:  # one bad answer refuses the host
            why = address_class(address)
            if why is not None:
                raise BlockedAddress(host, address, why)
        failure: Exception | None = None
        for address in dict.fromkeys(addresses):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections go through ``GuardedBackend``."""

    def __init__(
        self,
        resolver: Resolver = system_resolver,
        *,
        max_connections: int = 20,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            network_backend=GuardedBackend(resolver, inner),
        )


def guarded_client(
    resolver: Resolver = system_resolver,
    *,
    timeout_s: float = 10.0,
    inner: httpcore.AsyncNetworkBackend | None = None,
) -> httpx.AsyncClient:
    """A client for untrusted URLs: the guard on every connection, no redirects, no
    environment proxies. ``inner`` is the backend that really connects (tests)."""
    return httpx.AsyncClient(
        transport=GuardedTransport(resolver, inner=inner),
        follow_redirects=False,
        trust_env=False,
        timeout=timeout_s,
    )


def blocked_reason(exc: BaseException) -> BlockedAddress | None:
    """The ``BlockedAddress`` behind an httpx error (httpx re-raises httpcore's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, BlockedAddress):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
