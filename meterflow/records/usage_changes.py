"""The wire contract of the usage-changes topic: which (meter, customer) usage a fold changed.

The aggregator's relay copies each ``usage_changes`` row, once its fold committed, to this topic;
the alert evaluator reads it. One record per row (JSON, orjson):

    {"v": 1, "account": "acct_…", "live": false, "meter": "mtr_…", "customer": "cus_…",
     "first_ts": 1717243200, "last_ts": 1717243260, "last_received_ms": 1717243261123}

* ``first_ts`` / ``last_ts`` span the event times (unix seconds) the fold touched, so a late
  event correcting a past day or month is evaluated against that period.
* ``last_received_ms`` is the latest ingest receipt time among the folded events (``null`` for
  rows written before it was recorded): where the notification latency is measured from.
* The record key is ``account:mode:meter:customer``: one key's changes stay in one partition, and
  one evaluator sees them in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from meterflow.records.meter_events import RecordDecodeError

RECORD_VERSION = 1


@dataclass(frozen=True, slots=True)
class UsageChange:
    account_id: str
    livemode: bool
    meter_id: str
    customer: str
    first_event_ts: int
    last_event_ts: int
    last_received_ms: int | None


def usage_change_key(change: UsageChange) -> bytes:
    mode = "live" if change.livemode else "test"
    return f"{change.account_id}:{mode}:{change.meter_id}:{change.customer}".encode()


def encode_usage_change(change: UsageChange) -> bytes:
    return orjson.dumps(
        {
            "v": RECORD_VERSION,
            "account": change.account_id,
            "live": change.livemode,
            "meter": change.meter_id,
            "customer": change.customer,
            "first_ts": change.first_event_ts,
            "last_ts": change.last_event_ts,
            "last_received_ms": change.last_received_ms,
        }
    )


def decode_usage_change(raw: bytes | None) -> UsageChange:
    """The record's change; :class:`RecordDecodeError` for anything meterflow did not write."""
    if raw is None:
        raise RecordDecodeError("usage-changes record without a value")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordDecodeError(f"malformed usage-changes record: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != RECORD_VERSION:
        raise RecordDecodeError("not a version 1 usage-changes record")
    try:
        return _from_document(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordDecodeError(f"malformed usage-changes record: {exc}") from exc


def _string(doc: dict[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
    return value


def _integer(value: Any, key: str) -> int:
    # bool is an int subclass; a flag where a time belongs is junk, not 0 or 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} must be an integer")
    return value


def _from_document(doc: dict[str, Any]) -> UsageChange:
    live = doc["live"]
    if not isinstance(live, bool):
        raise TypeError("live must be a boolean")
    first = _integer(doc["first_ts"], "first_ts")
    last = _integer(doc["last_ts"], "last_ts")
    if last < first:
        raise ValueError("last_ts before first_ts")
    received = doc.get("last_received_ms")
    return UsageChange(
        account_id=_string(doc, "account"),
        livemode=live,
        meter_id=_string(doc, "meter"),
        customer=_string(doc, "customer"),
        first_event_ts=first,
        last_event_ts=last,
        last_received_ms=None if received is None else _integer(received, "last_received_ms"),
    )
