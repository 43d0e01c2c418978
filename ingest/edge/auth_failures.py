"""Failed authentications per client address: after too many, the address gets 429 for a while,
before its key is even looked up or its body read, so guessing keys or flooding with bad ones
costs nothing.

State exists only for addresses that failed, in a least-recently-used table of bounded size: an
attacker with more addresses than it holds evicts the oldest entries (which then start afresh)
but cannot grow memory. IPv6 addresses count per /64, the block one host usually controls. Like
every limit here it is held in process memory, per ingest process.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ingest.edge.errors import RateLimited

MAX_TRACKED_ADDRESSES = 10_000
_IPV6_PREFIX = 64

# The client as ASGI reports it: (host, port), or None (e.g. a Unix socket).
Client = tuple[str, int] | None


class AddressBlocked(RateLimited):
    """429: too many failed authentications from the client's address."""


@dataclass(slots=True)
class _Failures:
    count: int  # failures since window_start_s
    window_start_s: float
    blocked_until_s: float


def address_key(client: Client) -> str | None:
    """What failures are counted by: the IP address, or its /64 for IPv6; None: not limited."""
    if not client:
        return None
    host = client[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, _IPV6_PREFIX), strict=False))
    return str(ip)


class FailedAuthentications:
    """``failures`` within ``window_s`` of the first of them block an address for ``block_s``;
    ``failures=0`` turns the limit off."""

    def __init__(
        self,
        failures: int,
        window_s: float,
        block_s: float,
        *,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failures = failures
        self._window_s = window_s
        self._block_s = block_s
        self._max_addresses = max_addresses
        self._clock = clock
        self._by_address: OrderedDict[str, _Failures] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._failures > 0

    def __len__(self) -> int:
        """Addresses tracked right now."""
        return len(self._by_address)

    def check(self, client: Client) -> None:
        """Raise :class:`AddressBlocked` (429 with ``Retry-After``) while the address is blocked."""
        key = address_key(client) if self.enabled else None
        state = None if key is None else self._by_address.get(key)
        if key is None or state is None:
            return
        wait_s = state.blocked_until_s - self._clock()
        if wait_s <= 0:
            return
        self._by_address.move_to_end(key)  # an address still knocking stays tracked
        raise AddressBlocked(
            "Too many requests with an invalid API key from your address. Retry after the time "
            "given in Retry-After, with a valid key.",
            code="rate_limit",
            headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
        )

    def failed(self, client: Client) -> None:
        """Count one failed authentication; the one that reaches the limit starts the block."""
        key = address_key(client) if self.enabled else None
        if key is None:
            return
        now = self._clock()
        state = self._by_address.get(key)
        if state is None:
            while len(self._by_address) >= self._max_addresses:
                self._by_address.popitem(last=False)
            state = self._by_address[key] = _Failures(0, now, 0.0)
        else:
            self._by_address.move_to_end(key)
        if state.blocked_until_s > now:
            return  # a request already in flight when the block began
        if now - state.window_start_s >= self._window_s:
            state.count, state.window_start_s = 0, now
        state.count += 1
        if state.count >= self._failures:
            state.blocked_until_s = now + self._block_s
            state.count, state.window_start_s = 0, now + self._block_s
