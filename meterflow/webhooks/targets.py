"""Where a webhook may connect: a host resolved once, every address checked.

Ingest checks a URL when an endpoint is registered; the aggregator checks again on every delivery
and connects only to the addresses it checked, so a name that resolved to a public address at
registration and to 127.0.0.1 later (DNS rebinding) is refused then.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import ip_address

from meterflow.errors import MeterflowError
from meterflow.webhooks.addresses import Address, check_host, check_resolved

Resolver = Callable[[str, int], Awaitable[list[Address]]]


class TargetUnresolvable(MeterflowError):
    """The host has no address now (no such name, or DNS did not answer)."""

    retriable = True


async def resolve_with_system_dns(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to for a TCP connection, in the resolver's order."""
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnresolvable(f"could not resolve {host}") from exc
    addresses: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in found:
        address = ip_address(sockaddr[0])  # a link-local one keeps its "%zone"
        if address not in addresses:
            addresses.append(address)
    return addresses


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """Which hosts webhooks may reach, and how names are resolved."""

    allow_private: bool = False
    resolver: Resolver = resolve_with_system_dns

    async def addresses(self, host: str, port: int) -> list[Address]:
        """The checked addresses to connect to for ``host`` (a URL's lower-case hostname).

        Raises :class:`~meterflow.webhooks.addresses.TargetRefused` if the host, or any address
        it resolves to, may not be reached, and :class:`TargetUnresolvable` if it has none.
        """
        literal = check_host(host, allow_private=self.allow_private)
        if literal is not None:
            return [literal]
        found = await self.resolver(host, port)
        if not found:
            raise TargetUnresolvable(f"could not resolve {host}")
        check_resolved(host, found, allow_private=self.allow_private)
        return found
