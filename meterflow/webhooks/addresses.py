"""Which hosts a webhook may reach (pure): refused networks, IP literals, metadata hostnames.

The aggregator connects to a webhook URL on a tenant's behalf, so an unchecked URL reaches whatever
the aggregator can reach: the cloud metadata service, the database, an admin port. Only public
unicast addresses are targets. Local ones (loopback, private, link-local, carrier-grade NAT,
unique-local) become targets when the operator turns on ``METERFLOW_WEBHOOK_ALLOW_PRIVATE_TARGETS``
for development; metadata services, unspecified, multicast and reserved addresses never do.

Python's ``ipaddress.is_global`` is not used: it counts multicast, NAT64 (``64:ff9b::7f00:1``) and
6to4 (``2002:7f00:1::``) forms of loopback as global.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from meterflow.errors import MeterflowError

Address = IPv4Address | IPv6Address
ALLOW_PRIVATE_SETTING = "METERFLOW_WEBHOOK_ALLOW_PRIVATE_TARGETS"


class TargetRefused(MeterflowError):
    """A webhook URL whose host may not be reached; the message says why. It names the host as
    written, never an address a name resolved to. ``local``: allowing private targets would
    allow it."""

    def __init__(self, message: str, *, local: bool = False) -> None:
        super().__init__(message)
        self.local = local


@dataclass(frozen=True, slots=True)
class Refusal:
    what: str  # "a loopback address": completes "<host> is …" or "<host> resolves to …"
    local: bool  # reachable when private targets are allowed


UNSPECIFIED = Refusal("an unspecified address", local=False)
LOOPBACK = Refusal("a loopback address", local=True)
PRIVATE = Refusal("a private address", local=True)
LINK_LOCAL = Refusal("a link-local address", local=True)
SHARED = Refusal("a carrier-grade NAT address", local=True)
UNIQUE_LOCAL = Refusal("a unique-local address", local=True)
MULTICAST = Refusal("a multicast address", local=False)
RESERVED = Refusal("a reserved address", local=False)
METADATA = Refusal("a cloud metadata service", local=False)


def _table(*rows: tuple[str, Refusal]) -> tuple[tuple[IPv4Network | IPv6Network, Refusal], ...]:
    return tuple((ip_network(net), refusal) for net, refusal in rows)


# IANA's special-purpose registries, as far as a webhook target is concerned.
_V4 = _table(
    ("0.0.0.0/8", UNSPECIFIED),
    ("10.0.0.0/8", PRIVATE),
    ("100.64.0.0/10", SHARED),
    ("127.0.0.0/8", LOOPBACK),
    ("169.254.0.0/16", LINK_LOCAL),
    ("172.16.0.0/12", PRIVATE),
    ("192.0.0.0/24", RESERVED),
    ("192.0.2.0/24", RESERVED),
    ("192.88.99.0/24", RESERVED),
    ("192.168.0.0/16", PRIVATE),
    ("198.18.0.0/15", RESERVED),
    ("198.51.100.0/24", RESERVED),
    ("203.0.113.0/24", RESERVED),
    ("224.0.0.0/4", MULTICAST),
    ("240.0.0.0/4", RESERVED),  # and the broadcast address
)
_V6 = _table(
    ("::/128", UNSPECIFIED),
    ("::1/128", LOOPBACK),
    ("64:ff9b:1::/48", PRIVATE),  # local-use NAT64
    ("100::/64", RESERVED),
    ("2001::/23", RESERVED),  # Teredo and other protocol assignments
    ("2001:db8::/32", RESERVED),
    ("3fff::/20", RESERVED),
    ("fc00::/7", UNIQUE_LOCAL),
    ("fe80::/10", LINK_LOCAL),
    ("fec0::/10", PRIVATE),  # deprecated site-local
    ("ff00::/8", MULTICAST),
)
_GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")
_NAT64 = IPv6Network("64:ff9b::/96")
_METADATA_ADDRESSES: frozenset[Address] = frozenset(
    {
        IPv4Address("169.254.169.254"),  # AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack
        IPv4Address("169.254.170.2"),  # AWS ECS task metadata
        IPv4Address("100.100.100.200"),  # Alibaba Cloud
        IPv6Address("fd00:ec2::254"),  # AWS over IPv6
    }
)
METADATA_HOSTNAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)


def address_refusal(address: Address) -> Refusal | None:
    """Why ``address`` is not a public unicast address, or None if it is one."""
    if isinstance(address, IPv6Address):
        address = IPv6Address(int(address))  # without a zone
    if address in _METADATA_ADDRESSES:
        return METADATA
    if isinstance(address, IPv4Address):
        return next((refusal for net, refusal in _V4 if address in net), None)
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return address_refusal(embedded)
    found = next((refusal for net, refusal in _V6 if address in net), None)
    if found is None and address not in _GLOBAL_UNICAST_V6:
        return RESERVED
    return found


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address a mapped (``::ffff:a.b.c.d``), NAT64 or 6to4 address reaches."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.sixtofour


def allowed(refusal: Refusal | None, *, allow_private: bool) -> bool:
    return refusal is None or (refusal.local and allow_private)


_NUMBER = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
_DECIMAL_OCTET = re.compile(r"(0|[1-9][0-9]{0,2})")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def literal_address(host: str) -> Address | None:
    """The address a URL's host (lower-case, without brackets) spells out, or None for a name.

    An IPv4 address must be four decimal numbers: resolvers also read ``2130706433``,
    ``0x7f000001``, ``017700000001`` and ``127.1`` as 127.0.0.1, which hides a target from a
    reader, so any host whose last label is a number is refused unless it is in that form (the
    WHATWG URL standard's rule for what counts as an IPv4 host).
    """
    if ":" in host:
        if "%" in host:
            raise TargetRefused(f"{host} names a network interface (a zone)")
        try:
            return IPv6Address(host)
        except ValueError:
            raise TargetRefused(f"{host} is not a valid IPv6 address") from None
    labels = host.removesuffix(".").split(".")
    if _NUMBER.fullmatch(labels[-1]):
        if len(labels) != 4 or not all(
            _DECIMAL_OCTET.fullmatch(label) and int(label) <= 255 for label in labels
        ):
            raise TargetRefused(f"{host} is not an IPv4 address in dotted decimal form (a.b.c.d)")
        return IPv4Address(".".join(labels))
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise TargetRefused(f"{host} is not a valid hostname")
    return None


def check_host(host: str, *, allow_private: bool) -> Address | None:
    """Refuse a host that may not be a target before any lookup; return the address it spells
    out, or None for a name still to be resolved."""
    literal = literal_address(host)
    if literal is not None:
        refusal = address_refusal(literal)
        if not allowed(refusal, allow_private=allow_private):
            assert refusal is not None  # noqa: S101 - allowed() is True for None
            raise TargetRefused(f"{host} is {refusal.what}", local=refusal.local)
        return literal
    if host.removesuffix(".") in METADATA_HOSTNAMES:
        raise TargetRefused(f"{host} is {METADATA.what}")
    return None


def check_resolved(host: str, addresses: list[Address], *, allow_private: bool) -> None:
    """Refuse a name if any address it resolves to is refused: a client may connect to any of
    them, and an attacker's DNS answers whichever suits it."""
    for address in addresses:
        refusal = address_refusal(address)
        if not allowed(refusal, allow_private=allow_private):
            assert refusal is not None  # noqa: S101 - allowed() is True for None
            raise TargetRefused(f"{host} resolves to {refusal.what}", local=refusal.local)
