from decimal import Decimal

import pytest

from meterflow.rules.events import (
    MAX_FUTURE_S,
    MAX_PAST_S,
    EventRuleBroken,
    check_timestamp,
    format_rfc3339,
    parse_rfc3339,
    parse_value,
    payload_customer_and_value,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("25", Decimal(25)),
        ("0", Decimal(0)),
        ("-3", Decimal(-3)),
        ("1.5", Decimal("1.5")),
        (".5", Decimal("0.5")),
        ("000123", Decimal(123)),
        ("123456789012345", Decimal(123456789012345)),
        ("1.23456789012345", Decimal("1.23456789012345")),
        ("0.000000000000000000001", Decimal("1e-21")),
    ],
)
def test_accepts_decimal_strings(raw: str, expected: Decimal) -> None:
    assert parse_value(raw, "value") == expected


@pytest.mark.parametrize(
    "raw",
    ["", " 1", "1 ", "+1", "1e3", "0x10", "NaN", "nan", "Infinity", "-inf", "1,5", "1.", "--1",
     "1.2.3", "½", "١٢"],
)  # fmt: skip
def test_rejects_junk_values(raw: str) -> None:
    with pytest.raises(EventRuleBroken) as exc:
        parse_value(raw, "value")
    assert (exc.value.sync_code, exc.value.async_code) == (
        "payload_invalid_value",
        "meter_event_invalid_value",
    )
    assert exc.value.param == "payload[value]"


def test_rejects_more_than_15_significant_digits() -> None:
    for raw in ("1234567890123456", "1.234567890123456", "-1234567890123456"):
        with pytest.raises(EventRuleBroken) as exc:
            parse_value(raw, "value")
        assert exc.value.async_code == "meter_event_value_too_many_digits"


def test_timestamp_window_bounds_are_inclusive() -> None:
    now = 1_800_000_000
    check_timestamp(now - MAX_PAST_S, now)
    check_timestamp(now + MAX_FUTURE_S, now)
    with pytest.raises(EventRuleBroken) as past:
        check_timestamp(now - MAX_PAST_S - 1, now)
    assert past.value.sync_code == "timestamp_too_far_in_past"
    with pytest.raises(EventRuleBroken) as future:
        check_timestamp(now + MAX_FUTURE_S + 1, now)
    assert future.value.sync_code == "timestamp_in_future"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-06-01T12:00:00.000Z", 1717243200),
        ("2024-06-01T12:00:00Z", 1717243200),
        ("2024-06-01T12:00:00.999999999Z", 1717243200),
        ("2024-06-01T14:00:00+02:00", 1717243200),
        ("2024-06-01t12:00:00z", 1717243200),
    ],
)
def test_parses_rfc3339(raw: str, expected: int) -> None:
    assert parse_rfc3339(raw) == expected


@pytest.mark.parametrize(
    "raw", ["2024-06-01", "1717243200", "2024-06-01 12:00:00Z", "2024-13-01T12:00:00Z", ""]
)
def test_rejects_non_rfc3339(raw: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_rfc3339(raw)


def test_formats_rfc3339_with_milliseconds() -> None:
    assert format_rfc3339(1717243200_123) == "2024-06-01T12:00:00.123Z"
    assert format_rfc3339(1717243200_000) == "2024-06-01T12:00:00.000Z"


def test_customer_and_value_keys_follow_the_meter() -> None:
    payload = {"cust": "cus_1", "tokens": "5"}
    assert payload_customer_and_value(payload, "cust", "tokens") == ("cus_1", "5")
    with pytest.raises(EventRuleBroken) as no_customer:
        payload_customer_and_value({"tokens": "5"}, "cust", "tokens")
    assert no_customer.value.sync_code == "payload_no_customer_defined"
    with pytest.raises(EventRuleBroken) as no_value:
        payload_customer_and_value({"cust": "cus_1"}, "cust", "tokens")
    assert no_value.value.sync_code == "payload_no_value_defined"
