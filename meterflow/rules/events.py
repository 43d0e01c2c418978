"""Stripe's rules for a meter event, as pure functions shared by ingest and aggregator.

Each broken rule carries both of Stripe's names for it: the v2 synchronous error code and the code
used in asynchronous error reports. The ``*_failure`` and :func:`find_customer_and_value` forms
return it as an :class:`EventRuleFailure` (the per-event engine in
:mod:`meterflow.rules.meter_events` runs on the stream's hot path, where a failure is a value,
never an exception); the ``check_*``, ``parse_*`` and :func:`payload_customer_and_value` forms
raise it as an :class:`EventRuleBroken`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import NamedTuple

MAX_SIGNIFICANT_DIGITS = 15
MAX_PAST_S = 35 * 24 * 60 * 60
MAX_FUTURE_S = 5 * 60
MAX_EVENT_NAME = 100
MAX_IDENTIFIER = 100
MAX_PAYLOAD_KEYS = 50
MAX_PAYLOAD_KEY_LENGTH = 100
MAX_PAYLOAD_VALUE_LENGTH = 500

# Plain decimal notation only: optional minus, digits, optional fraction. No exponent, no hex,
# no leading plus, no whitespace, no NaN/Infinity, ASCII digits only.
_DECIMAL = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)", re.ASCII)
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


@dataclass(frozen=True, slots=True)
class EventRuleBroken(Exception):
    """A meter event breaks one of Stripe's rules."""

    sync_code: str
    async_code: str
    message: str
    param: str | None = None

    def __str__(self) -> str:
        return self.message


class EventRuleFailure(NamedTuple):
    """A broken rule as a returned value (a named tuple: cheap to build per event)."""

    sync_code: str
    async_code: str
    message: str
    param: str | None

    def error(self) -> EventRuleBroken:
        return EventRuleBroken(self.sync_code, self.async_code, self.message, self.param)


def parse_value(raw: str, value_key: str) -> Decimal:
    """A payload value: a decimal string with at most 15 significant digits; negatives allowed."""
    check_value(raw, value_key)
    try:
        return Decimal(raw)
    except InvalidOperation as exc:  # unreachable after the pattern check; kept as a guard
        raise EventRuleBroken(
            "payload_invalid_value", "meter_event_invalid_value", f"Invalid value {raw!r}."
        ) from exc


def check_value(raw: str, value_key: str) -> None:
    """:func:`parse_value`'s checks without building the number (ingest forwards the text)."""
    failure = value_failure(raw, value_key)
    if failure is not None:
        raise failure.error()


def value_failure(raw: str, value_key: str) -> EventRuleFailure | None:
    """What :func:`check_value` would raise, returned instead; ``None`` for a good value."""
    if not _DECIMAL.fullmatch(raw):
        return EventRuleFailure(
            "payload_invalid_value",
            "meter_event_invalid_value",
            f"The value of payload[{value_key}] must be a decimal number, got {raw[:40]!r}.",
            f"payload[{value_key}]",
        )
    digits = raw.lstrip("-").replace(".", "").lstrip("0")
    if len(digits) > MAX_SIGNIFICANT_DIGITS:
        return EventRuleFailure(
            "payload_invalid_value",
            "meter_event_value_too_many_digits",
            f"The value in the event payload can have at most {MAX_SIGNIFICANT_DIGITS} digits. "
            f"Received {raw[:40]}.",
            f"payload[{value_key}]",
        )
    return None


def check_timestamp(timestamp_s: int, now_s: int) -> None:
    """Within the past 35 days and at most 5 minutes ahead of ``now_s``."""
    failure = timestamp_failure(timestamp_s, now_s)
    if failure is not None:
        raise failure.error()


def timestamp_failure(timestamp_s: int, now_s: int) -> EventRuleFailure | None:
    """What :func:`check_timestamp` would raise, returned instead; ``None`` within bounds."""
    if timestamp_s < now_s - MAX_PAST_S:
        return EventRuleFailure(
            "timestamp_too_far_in_past",
            "timestamp_too_far_in_past",
            "The event timestamp cannot be more than 35 days in the past. Expected a timestamp "
            f"greater than or equal to {now_s - MAX_PAST_S}.",
            "timestamp",
        )
    if timestamp_s > now_s + MAX_FUTURE_S:
        return EventRuleFailure(
            "timestamp_in_future",
            "timestamp_in_future",
            "The event timestamp cannot be more than 5 minutes in the future. Expected a "
            f"timestamp less than or equal to {now_s + MAX_FUTURE_S}.",
            "timestamp",
        )
    return None


def parse_rfc3339(raw: str) -> int:
    """An RFC 3339 date-time as unix seconds; a fraction of a second is dropped."""
    match = _RFC3339.fullmatch(raw)
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {raw[:40]!r}")
    date, clock, offset = match.groups()
    return _unix_seconds(date, clock, offset.upper())


@lru_cache(maxsize=4096)
def _unix_seconds(date: str, clock: str, offset: str) -> int:
    """Cached: the events of a busy stream mostly share their second. An impossible date or time
    (month 13, second 60) raises ``ValueError``, which is never cached."""
    zone = "+00:00" if offset == "Z" else offset
    return int(datetime.fromisoformat(f"{date}T{clock}{zone}").timestamp())


def format_rfc3339(timestamp_ms: int) -> str:
    """Unix milliseconds as Stripe's v2 timestamp, e.g. ``2024-06-01T12:00:00.000Z``."""
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{timestamp_ms % 1000:03d}Z"


def payload_customer_and_value(
    payload: dict[str, str], customer_key: str, value_key: str
) -> tuple[str, str]:
    """The customer id and raw value from a payload, per the meter's mapping."""
    found = find_customer_and_value(payload, customer_key, value_key)
    if isinstance(found, EventRuleFailure):
        raise found.error()
    return found


# What a count meter's event without a value stores: counting ignores values, and one event
# counts as one.
COUNTED_VALUE = "1"


def find_customer_and_value(
    payload: dict[str, str], customer_key: str, value_key: str, *, value_required: bool = True
) -> tuple[str, str] | EventRuleFailure:
    """:func:`payload_customer_and_value`, returning the broken rule instead of raising it; a
    missing value is :data:`COUNTED_VALUE` when not ``value_required`` (count meters)."""
    customer = payload.get(customer_key)
    if not customer:
        return EventRuleFailure(
            "payload_no_customer_defined",
            "meter_event_no_customer_defined",
            f"Customer mapping key {customer_key} not found in payload.",
            f"payload[{customer_key}]",
        )
    value = payload.get(value_key)
    if (value is None or value == "") and not value_required:
        return customer, COUNTED_VALUE
    if value is None or value == "":
        return EventRuleFailure(
            "payload_no_value_defined",
            "meter_event_value_not_found",
            f"Value settings key {value_key} not found in payload.",
            f"payload[{value_key}]",
        )
    return customer, value
