"""The wire contract between ingest and aggregator: what a meter-events Kafka record holds.

One record carries one or more accepted events of one account and mode, all for customers that
hash to the same partition, or one cancel. The value is JSON (orjson):

    {"v": 1, "kind": "events", "account": "acct_…", "live": false, "received_ms": 1717243200123,
     "batch": "<32 hex>", "events": [{"meter": "mtr_…", "name": "alpaca_ai_tokens",
     "identifier": "…", "customer": "cus_…", "value": "25", "ts": 1717243200}, …]}

    {"v": 1, "kind": "cancel", "account": …, "live": …, "received_ms": …, "batch": …,
     "meter": "mtr_…", "name": "…", "identifier": "…", "customer": "cus_…"}

* The record key is ``account:mode:customer``: one customer's events and cancels stay in one
  partition, in the order ingest produced them.
* The event time (``ts``, unix seconds) lives in the value; the Kafka timestamp is the broker's
  append time, so retention never deletes a back-dated event early.
* Receipt order, which decides ``last`` and pre-aggregation overwrites, is the tuple
  ``(received_ms, batch, index in events)``: stamped once at ingest, carried in the record, so it
  is identical under redelivery and replay and comparable across partitions and processes.
  :class:`ReceiptClock` makes it follow arrival order within one ingest process, even for requests
  in the same millisecond; requests to different processes in the same millisecond are ordered by
  their batch ids, arbitrarily but the same way every time.
* ``value`` stays the decimal string the client sent; it was validated before publishing.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson

RECORD_VERSION = 1


class RecordDecodeError(ValueError):
    """A record that does not follow this contract (never produced by meterflow itself)."""


class AcceptedEvent(NamedTuple):
    """One validated event. A named tuple: ingest builds one per accepted event and the aggregator
    transposes a record's events into columns, and both are cheapest on a plain tuple."""

    meter_id: str
    event_name: str
    identifier: str
    customer: str
    value: str
    timestamp_s: int


@dataclass(frozen=True, slots=True)
class EventsRecord:
    account_id: str
    livemode: bool
    received_ms: int
    batch: str
    events: tuple[AcceptedEvent, ...]
    kind: Literal["events"] = "events"


@dataclass(frozen=True, slots=True)
class CancelRecord:
    account_id: str
    livemode: bool
    received_ms: int
    batch: str
    meter_id: str
    event_name: str
    identifier: str
    customer: str
    kind: Literal["cancel"] = "cancel"


MeterEventsRecord = EventsRecord | CancelRecord


class ReceiptClock:
    """Stamps ``(received_ms, batch)`` in arrival order for one ingest process.

    ``received_ms`` never goes backwards (a wall clock stepped back repeats the last value), and
    the batch id is a per-process random prefix followed by a counter, both fixed-width hex, so
    two stamps of the same millisecond compare in the order they were taken.
    """

    def __init__(self, now_s: Callable[[], float] = time.time) -> None:
        self._now_s = now_s
        self._prefix = secrets.token_hex(8)
        self._count = 0
        self._last_ms = 0

    def stamp(self) -> tuple[int, str]:
        self._last_ms = max(self._last_ms, int(self._now_s() * 1000))
        self._count += 1
        return self._last_ms, f"{self._prefix}{self._count:016x}"


def partition_key(account_id: str, livemode: bool, customer: str) -> bytes:
    return f"{account_id}:{'live' if livemode else 'test'}:{customer}".encode()


def encode(record: MeterEventsRecord) -> bytes:
    head: dict[str, Any] = {
        "v": RECORD_VERSION,
        "kind": record.kind,
        "account": record.account_id,
        "live": record.livemode,
        "received_ms": record.received_ms,
        "batch": record.batch,
    }
    if isinstance(record, EventsRecord):
        head["events"] = [
            {
                "meter": e.meter_id,
                "name": e.event_name,
                "identifier": e.identifier,
                "customer": e.customer,
                "value": e.value,
                "ts": e.timestamp_s,
            }
            for e in record.events
        ]
    else:
        head.update(
            meter=record.meter_id,
            name=record.event_name,
            identifier=record.identifier,
            customer=record.customer,
        )
    return orjson.dumps(head)


def decode(raw: bytes) -> MeterEventsRecord:
    try:
        return _from_document(orjson.loads(raw))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, RecordDecodeError):  # a ValueError of our own, already worded
            raise
        raise RecordDecodeError(f"malformed meter-events record: {exc}") from exc


def _from_document(doc: Any) -> MeterEventsRecord:
    """Raises ``KeyError``/``TypeError``/``ValueError`` on missing or mistyped fields."""
    if doc["v"] != RECORD_VERSION:
        raise RecordDecodeError(f"unsupported record version {doc['v']!r}")
    account, live = str(doc["account"]), bool(doc["live"])
    received_ms, batch = int(doc["received_ms"]), str(doc["batch"])
    if doc["kind"] == "events":
        events = tuple(
            AcceptedEvent(  # positional: this runs once per event folded
                str(e["meter"]),
                str(e["name"]),
                str(e["identifier"]),
                str(e["customer"]),
                str(e["value"]),
                int(e["ts"]),
            )
            for e in doc["events"]
        )
        return EventsRecord(account, live, received_ms, batch, events)
    if doc["kind"] == "cancel":
        return CancelRecord(
            account,
            live,
            received_ms,
            batch,
            meter_id=str(doc["meter"]),
            event_name=str(doc["name"]),
            identifier=str(doc["identifier"]),
            customer=str(doc["customer"]),
        )
    raise RecordDecodeError(f"unknown record kind {doc['kind']!r}")
