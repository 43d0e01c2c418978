"""The general per-account limit, failed authentications per client address, what the app counts,
and the settings, bench switch and README table behind them (pure, on a fake clock)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ingest.edge.auth import Principal
from ingest.edge.auth_failures import (
    AddressBlocked,
    Client,
    FailedAuthentications,
    address_key,
)
from ingest.edge.errors import AuthenticationFailed, InvalidRequest, RateLimited, SessionExpired
from ingest.edge.metrics import IngestMetrics
from ingest.edge.rate_limits import AccountLimiter, ApiLimiter, RequestLimits
from loadtest.bench.stack import UNLIMITED
from meterflow.errors import ConfigurationError
from meterflow.settings import Settings, environment_variables, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"
ATTACKER: Client = ("203.0.113.7", 50_000)
BYSTANDER: Client = ("198.51.100.1", 50_001)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _passed(check: AccountLimiter | ApiLimiter, who: Principal, attempts: int) -> int:
    passed = 0
    for _ in range(attempts):
        try:
            if isinstance(check, ApiLimiter):
                check.check(who)
            else:
                check.check(who.account_id, who.livemode)
        except RateLimited:
            continue
        passed += 1
    return passed


def test_the_general_limit_is_stripes_basic_limit_per_account_and_mode() -> None:
    clock = FakeClock()
    limits = Settings().ingest
    api = ApiLimiter(
        limits.rate_limit_api_live_per_s, limits.rate_limit_api_test_per_s, clock=clock
    )
    assert _passed(api, Principal("acct_a", livemode=False), 3000) == 25
    assert _passed(api, Principal("acct_a", livemode=True), 3000) == 100
    assert _passed(api, Principal("acct_b", livemode=False), 30) == 25
    clock.now += 0.2  # a fifth of a second refills a fifth of the bucket
    assert _passed(api, Principal("acct_a", livemode=False), 30) == 5
    assert _passed(api, Principal("acct_a", livemode=True), 30) == 20


def test_the_general_limit_answers_stripes_429_with_retry_after() -> None:
    api = ApiLimiter(100, 25, clock=FakeClock())
    who = Principal("acct_a", livemode=False)
    _passed(api, who, 25)
    with pytest.raises(RateLimited) as raised:
        api.check(who)
    assert raised.value.status == 429
    assert raised.value.body()["error"]["type"] == "rate_limit_error"
    assert raised.value.body()["error"]["code"] == "rate_limit"
    assert "25 per second" in raised.value.message
    assert raised.value.headers == {"Retry-After": "1"}


def test_zero_turns_the_general_limit_off() -> None:
    api = ApiLimiter(0, 0, clock=FakeClock())
    assert _passed(api, Principal("acct_a", livemode=False), 5000) == 5000
    assert _passed(api, Principal("acct_a", livemode=True), 5000) == 5000


def _fail(limiter: FailedAuthentications, client: Client, times: int) -> None:
    for _ in range(times):
        limiter.check(client)
        limiter.failed(client)


def test_failures_block_the_address_for_the_block_time_then_it_starts_afresh() -> None:
    clock = FakeClock()
    limiter = FailedAuthentications(20, 10.0, 60.0, clock=clock)
    _fail(limiter, ATTACKER, 19)
    limiter.check(ATTACKER)  # 19 failures: still let in
    limiter.failed(ATTACKER)
    with pytest.raises(AddressBlocked) as raised:
        limiter.check(ATTACKER)
    assert raised.value.status == 429
    assert raised.value.body()["error"] == {
        "type": "rate_limit_error",
        "message": raised.value.message,
        "code": "rate_limit",
    }
    assert raised.value.headers == {"Retry-After": "60"}
    limiter.check(BYSTANDER)  # other addresses are not affected
    clock.now += 59.5
    with pytest.raises(AddressBlocked) as raised:
        limiter.check(("203.0.113.7", 60_000))  # any port of the address
    assert raised.value.headers == {"Retry-After": "1"}
    clock.now += 0.5
    limiter.check(ATTACKER)  # the block is over
    _fail(limiter, ATTACKER, 19)  # and the count starts again from zero
    limiter.check(ATTACKER)


def test_failures_spread_wider_than_the_window_never_block() -> None:
    clock = FakeClock()
    limiter = FailedAuthentications(20, 10.0, 60.0, clock=clock)
    for _ in range(10):
        _fail(limiter, ATTACKER, 19)
        clock.now += 10.0
    limiter.check(ATTACKER)


def test_zero_failures_turns_the_address_limit_off() -> None:
    limiter = FailedAuthentications(0, 10.0, 60.0, clock=FakeClock())
    _fail(limiter, ATTACKER, 1000)
    limiter.check(ATTACKER)
    assert len(limiter) == 0


def test_the_address_table_is_bounded_least_recently_used_first() -> None:
    clock = FakeClock()
    limiter = FailedAuthentications(3, 10.0, 60.0, max_addresses=100, clock=clock)
    quiet = ("192.0.2.99", 1)
    _fail(limiter, quiet, 3)  # blocked, then silent
    _fail(limiter, ATTACKER, 3)  # blocked, and keeps knocking
    for n in range(5000):
        limiter.failed((f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", 1))
        if n % 50 == 0:  # the attacker keeps knocking, so stays in the table
            with pytest.raises(AddressBlocked):
                limiter.check(ATTACKER)
    assert len(limiter) == 100
    limiter.check(quiet)  # evicted by 5,000 newer addresses: starts afresh
    with pytest.raises(AddressBlocked):
        limiter.check(ATTACKER)


@pytest.mark.parametrize(
    ("client", "key"),
    [
        (("192.0.2.1", 1), "192.0.2.1"),
        (("2001:db8:1:2:3:4:5:6", 1), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::1", 1), "2001:db8:1:2::/64"),
        (("::ffff:192.0.2.1", 1), "192.0.2.1"),
        (("testclient", 1), "testclient"),
        (None, None),
    ],
)
def test_addresses_count_by_ip_and_ipv6_by_its_64_block(client: Client, key: str | None) -> None:
    assert address_key(client) == key


def _limits(clock: FakeClock, **changes: float) -> tuple[RequestLimits, CollectorRegistry]:
    registry = CollectorRegistry()
    settings = Settings().with_overrides(**changes).ingest
    return RequestLimits(settings, IngestMetrics(registry).rate_limited, clock=clock), registry


def _refused(registry: CollectorRegistry, endpoint_class: str, reason: str) -> float:
    value = registry.get_sample_value(
        "meterflow_rate_limited_total", {"endpoint_class": endpoint_class, "reason": reason}
    )
    return value or 0.0


def test_request_limits_count_each_429_by_endpoint_class_and_reason() -> None:
    limits, registry = _limits(FakeClock())
    limits.observe(RateLimited("over", code="rate_limit"), "api", ATTACKER)
    limits.observe(RateLimited("over", code="rate_limit"), "meter_events", ATTACKER)
    limits.observe(RateLimited("over", code="rate_limit"), "stream", ATTACKER)
    limits.observe(AddressBlocked("blocked", code="rate_limit"), "api", ATTACKER)
    limits.observe(AddressBlocked("blocked", code="rate_limit"), "api", ATTACKER)
    limits.observe(InvalidRequest("bad"), "api", ATTACKER)
    assert _refused(registry, "api", "account") == 1
    assert _refused(registry, "meter_events", "account") == 1
    assert _refused(registry, "stream", "account") == 1
    assert _refused(registry, "api", "address") == 2


def test_request_limits_block_after_failed_keys_but_not_after_expired_sessions() -> None:
    limits, _ = _limits(FakeClock(), rate_limit_auth_failures=3)
    for _ in range(10):
        limits.observe(SessionExpired(), "stream", ATTACKER)
        limits.observe(InvalidRequest("bad"), "api", ATTACKER)
    limits.admit("api", ATTACKER)
    for _ in range(3):
        limits.observe(AuthenticationFailed("Invalid API Key provided"), "api", ATTACKER)
    for limit_class in ("api", "meter_events", "stream"):
        with pytest.raises(AddressBlocked):
            limits.admit(limit_class, ATTACKER)
    limits.admit("operational", ATTACKER)  # /healthz, /readyz and /metrics stay open
    limits.admit("api", BYSTANDER)


def test_request_limits_charge_only_the_general_class() -> None:
    limits, _ = _limits(FakeClock(), rate_limit_api_test_per_s=1)
    who = Principal("acct_a", livemode=False)
    limits.charge("api", who)
    for _ in range(100):
        limits.charge("meter_events", who)  # their handlers check their own limits
        limits.charge("stream", who)
        limits.charge("operational", who)
    with pytest.raises(RateLimited):
        limits.charge("api", who)


def test_settings_have_defaults_and_come_from_the_environment() -> None:
    defaults = Settings().ingest
    assert (
        defaults.rate_limit_api_live_per_s,
        defaults.rate_limit_api_test_per_s,
        defaults.rate_limit_auth_failures,
        defaults.rate_limit_auth_failures_window_s,
        defaults.rate_limit_auth_block_s,
    ) == (100.0, 25.0, 20, 10.0, 60.0)
    loaded = load_settings(
        {
            "METERFLOW_RATE_LIMIT_API_LIVE_PER_S": "200",
            "METERFLOW_RATE_LIMIT_API_TEST_PER_S": "50",
            "METERFLOW_RATE_LIMIT_AUTH_FAILURES": "5",
            "METERFLOW_RATE_LIMIT_AUTH_FAILURES_WINDOW_S": "30",
            "METERFLOW_RATE_LIMIT_AUTH_BLOCK_S": "300",
        }
    ).ingest
    assert (
        loaded.rate_limit_api_live_per_s,
        loaded.rate_limit_api_test_per_s,
        loaded.rate_limit_auth_failures,
        loaded.rate_limit_auth_failures_window_s,
        loaded.rate_limit_auth_block_s,
    ) == (200.0, 50.0, 5, 30.0, 300.0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("METERFLOW_RATE_LIMIT_API_TEST_PER_S", "-1"),
        ("METERFLOW_RATE_LIMIT_METER_EVENTS_PER_S", "-5"),
        ("METERFLOW_RATE_LIMIT_AUTH_FAILURES", "-1"),
        ("METERFLOW_RATE_LIMIT_AUTH_FAILURES_WINDOW_S", "0"),
        ("METERFLOW_RATE_LIMIT_AUTH_BLOCK_S", "-1"),
    ],
)
def test_negative_limits_and_empty_windows_are_configuration_errors(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigurationError, match="METERFLOW_RATE_LIMIT_"):
        load_settings({variable: value})


def test_the_bench_turns_every_limit_off() -> None:
    limits = load_settings(UNLIMITED).ingest
    assert limits.rate_limit_meter_events_per_s == 0
    assert limits.rate_limit_stream_events_per_s == 0
    assert limits.rate_limit_api_live_per_s == 0
    assert limits.rate_limit_api_test_per_s == 0
    assert limits.rate_limit_auth_failures == 0
    on_off = {v for v in environment_variables() if re.fullmatch(r"METERFLOW_RATE_LIMIT_\w+", v)}
    assert on_off - set(UNLIMITED) == {
        "METERFLOW_RATE_LIMIT_AUTH_FAILURES_WINDOW_S",
        "METERFLOW_RATE_LIMIT_AUTH_BLOCK_S",
    }


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.index("\n#", start + len(heading))
    return text[start:end]


def test_the_readme_tables_show_every_limit_with_its_default() -> None:
    text = README.read_text()
    limits = _section(text, "### Rate limits")
    configuration = _section(text, "### Configuration")
    defaults = Settings()
    for variable, field_name in environment_variables().items():
        if not variable.startswith("METERFLOW_RATE_LIMIT_"):
            continue
        default = defaults.value(field_name)
        shown = f"{default:,g}" if isinstance(default, float) else f"{default:,}"
        row = next((r for r in limits.splitlines() if f"`{variable}`" in r), None)
        assert row is not None, f"{variable} is missing from the Rate limits table"
        assert shown in row, f"the Rate limits table does not show {variable}'s default {shown}"
        assert f"`{variable}`" in configuration, f"{variable} is missing from Configuration"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert path in limits
