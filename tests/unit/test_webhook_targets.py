"""Which hosts a webhook may reach: the address table, IP literals in disguise, metadata names,
every resolved address checked, Stripe's https rule in live mode, and the setting that allows
local targets for development. DNS is faked: nothing here resolves or connects."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from aggregator.webhooks.http import NOT_HTTP, DeliveryFailed, status_of
from ingest.edge.errors import InvalidRequest
from ingest.edge.params import Params
from ingest.webhooks import targets as registration
from ingest.webhooks.api import parse_url
from ingest.webhooks.targets import check_endpoint_url
from meterflow.errors import ConfigurationError
from meterflow.settings import load_settings
from meterflow.webhooks.addresses import (
    LINK_LOCAL,
    LOOPBACK,
    METADATA,
    MULTICAST,
    PRIVATE,
    RESERVED,
    SHARED,
    UNIQUE_LOCAL,
    UNSPECIFIED,
    Address,
    Refusal,
    TargetRefused,
    address_refusal,
    check_host,
    literal_address,
)
from meterflow.webhooks.targets import TargetPolicy, TargetUnresolvable


@pytest.mark.parametrize(
    ("address", "refusal"),
    [
        ("127.0.0.1", LOOPBACK),
        ("127.255.0.9", LOOPBACK),
        ("10.0.0.1", PRIVATE),
        ("172.31.255.255", PRIVATE),
        ("192.168.1.1", PRIVATE),
        ("100.64.0.1", SHARED),
        ("169.254.1.1", LINK_LOCAL),
        ("169.254.169.254", METADATA),
        ("169.254.170.2", METADATA),
        ("100.100.100.200", METADATA),
        ("0.0.0.0", UNSPECIFIED),  # noqa: S104 - an address under test, nothing binds to it
        ("0.1.2.3", UNSPECIFIED),
        ("224.0.0.1", MULTICAST),
        ("239.255.255.250", MULTICAST),
        ("255.255.255.255", RESERVED),
        ("240.0.0.1", RESERVED),
        ("192.0.2.10", RESERVED),
        ("198.18.0.1", RESERVED),
        ("::1", LOOPBACK),
        ("::", UNSPECIFIED),
        ("fc00::1", UNIQUE_LOCAL),
        ("fd12:3456::1", UNIQUE_LOCAL),
        ("fd00:ec2::254", METADATA),
        ("fe80::1", LINK_LOCAL),
        ("fe80::1%eth0", LINK_LOCAL),
        ("ff02::1", MULTICAST),
        ("2001:db8::1", RESERVED),
        ("::ffff:127.0.0.1", LOOPBACK),
        ("::ffff:169.254.169.254", METADATA),
        ("::ffff:10.1.2.3", PRIVATE),
        ("64:ff9b::7f00:1", LOOPBACK),  # NAT64
        ("2002:7f00:1::", LOOPBACK),  # 6to4
        ("::7f00:1", RESERVED),  # IPv4-compatible, deprecated
        ("100::1", RESERVED),
        ("8.8.8.8", None),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
    ],
)
def test_only_public_unicast_addresses_are_targets(address: str, refusal: Refusal | None) -> None:
    assert address_refusal(ip_address(address)) == refusal


@pytest.mark.parametrize(
    "host",
    [
        "0x7f000001",
        "2130706433",
        "017700000001",
        "127.1",
        "0177.0.0.1",
        "127.0.0.01",
        "0x7f.0.0.1",
        "1.2.3.4.5",
        "256.1.1.1",
        "hooks.example.0x10",
        "exa%41mple.com",
        "a..b",
        "-.example.com",
        "::1%eth0",
        "::g",
    ],
)
def test_hosts_in_disguise_are_refused(host: str) -> None:
    with pytest.raises(TargetRefused):
        literal_address(host)


def test_literal_addresses_and_names() -> None:
    assert literal_address("127.0.0.1") == IPv4Address("127.0.0.1")
    assert literal_address("::ffff:127.0.0.1") == IPv6Address("::ffff:7f00:1")
    assert literal_address("hooks.example.com") is None
    assert literal_address("hooks.example.com.") is None
    assert literal_address("1password.com") is None
    assert literal_address("under_score.example") is None


@pytest.mark.parametrize(
    "url",
    [
        "http://0x7f000001/hook",
        "http://2130706433/hook",
        "http://017700000001/hook",
        "http://127.1:8080/hook",
        "https://[::1%25lo]/hook",
    ],
)
def test_the_parameter_parser_refuses_ip_literal_tricks(url: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_url(Params({"url": url}), required=True)
    assert (caught.value.code, caught.value.param) == ("url_invalid", "url")


def test_metadata_hostnames_are_refused_even_when_private_targets_are_allowed() -> None:
    for host in ("metadata.google.internal", "metadata.google.internal.", "metadata.goog"):
        with pytest.raises(TargetRefused, match="metadata") as caught:
            check_host(host, allow_private=True)
        assert not caught.value.local
    with pytest.raises(TargetRefused):
        check_host("169.254.169.254", allow_private=True)
    with pytest.raises(TargetRefused):
        check_host("0.0.0.0", allow_private=True)  # noqa: S104 - an address under test


def test_the_setting_allows_local_targets() -> None:
    with pytest.raises(TargetRefused) as caught:
        check_host("10.0.0.1", allow_private=False)
    assert caught.value.local
    assert check_host("10.0.0.1", allow_private=True) == IPv4Address("10.0.0.1")
    assert check_host("::1", allow_private=True) == IPv6Address("::1")
    assert check_host("hooks.example.com", allow_private=False) is None


class FakeDns:
    """Answers from a script, one answer per lookup, the last one repeated."""

    def __init__(self, *answers: list[str]) -> None:
        self._answers = [[ip_address(a) for a in answer] for answer in answers]
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[Address]:
        self.lookups.append((host, port))
        return self._answers[min(len(self.lookups), len(self._answers)) - 1]


async def test_every_resolved_address_is_checked() -> None:
    public = TargetPolicy(resolver=FakeDns(["93.184.216.34", "2606:4700::1111"]))
    assert await public.addresses("hooks.example.com", 443) == [
        IPv4Address("93.184.216.34"),
        IPv6Address("2606:4700::1111"),
    ]
    mixed = TargetPolicy(resolver=FakeDns(["93.184.216.34", "10.0.0.1"]))
    with pytest.raises(TargetRefused) as caught:
        await mixed.addresses("hooks.example.com", 443)
    assert str(caught.value) == "hooks.example.com resolves to a private address"
    allowed = TargetPolicy(allow_private=True, resolver=FakeDns(["10.0.0.1"]))
    assert await allowed.addresses("hooks.internal", 80) == [IPv4Address("10.0.0.1")]
    with pytest.raises(TargetUnresolvable):
        await TargetPolicy(resolver=FakeDns([])).addresses("nowhere.example", 443)


async def test_a_literal_address_is_never_looked_up() -> None:
    dns = FakeDns(["10.0.0.1"])
    assert await TargetPolicy(resolver=dns).addresses("93.184.216.34", 443) == [
        IPv4Address("93.184.216.34")
    ]
    assert dns.lookups == []


async def _refused(url: str, *, livemode: bool, targets: TargetPolicy) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        await check_endpoint_url(url, livemode=livemode, targets=targets)
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400,
        "url_invalid",
        "url",
    )
    return caught.value


async def test_live_mode_requires_https() -> None:
    targets = TargetPolicy(resolver=FakeDns(["93.184.216.34"]))
    error = await _refused("http://hooks.example.com/stripe", livemode=True, targets=targets)
    assert "https" in error.message
    await check_endpoint_url("https://hooks.example.com/stripe", livemode=True, targets=targets)
    await check_endpoint_url("http://hooks.example.com/stripe", livemode=False, targets=targets)
    local = TargetPolicy(allow_private=True)
    await _refused("http://127.0.0.1:9000/hook", livemode=True, targets=local)


async def test_registration_resolves_the_host() -> None:
    private = TargetPolicy(resolver=FakeDns(["192.168.0.10"]))
    error = await _refused("https://hooks.corp.example/x", livemode=True, targets=private)
    assert "hooks.corp.example resolves to a private address" in error.message
    assert "192.168.0.10" not in error.message
    assert "METERFLOW_WEBHOOK_ALLOW_PRIVATE_TARGETS" in error.message
    metadata = await _refused(
        "http://metadata.google.internal/computeMetadata/v1/",
        livemode=False,
        targets=TargetPolicy(allow_private=True),
    )
    assert "metadata" in metadata.message
    assert "METERFLOW_WEBHOOK_ALLOW_PRIVATE_TARGETS" not in metadata.message


async def test_a_name_that_does_not_resolve_yet_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def unresolvable(host: str, port: int) -> list[Address]:
        raise TargetUnresolvable(host)

    async def silent(host: str, port: int) -> list[Address]:
        await asyncio.sleep(60)
        return []

    monkeypatch.setattr(registration, "RESOLVE_TIMEOUT_S", 0.05)
    for resolver in (unresolvable, silent):
        targets = TargetPolicy(resolver=resolver)
        await check_endpoint_url("https://soon.example.com/x", livemode=True, targets=targets)


@pytest.mark.parametrize(
    "banner", [b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n", b"220 mail.internal ESMTP\r\n", b"+OK\r\n"]
)
def test_a_non_http_answer_is_recorded_as_a_fixed_error(banner: bytes) -> None:
    with pytest.raises(DeliveryFailed) as caught:
        status_of(banner)
    assert str(caught.value) == NOT_HTTP == "connection closed: not an HTTP response"


def test_the_setting_is_a_flag_and_off_by_default() -> None:
    assert load_settings({}).webhooks.webhook_allow_private_targets is False
    for raw, value in (("1", True), ("true", True), ("On", True), ("0", False), ("no", False)):
        settings = load_settings({"METERFLOW_WEBHOOK_ALLOW_PRIVATE_TARGETS": raw})
        assert settings.webhooks.webhook_allow_private_targets is value
    with pytest.raises(ConfigurationError, match="METERFLOW_WEBHOOK_ALLOW_PRIVATE_TARGETS"):
        load_settings({"METERFLOW_WEBHOOK_ALLOW_PRIVATE_TARGETS": "maybe"})
