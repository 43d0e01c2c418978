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
* ``value`` stays the decimal string the client sent; it was validated before publishing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

import orjson

RECORD_VERSION = 1


class RecordDecodeError(ValueError):
    """A record that does not follow this contract (never produced by meterflow itself)."""


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
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


def new_batch_id() -> str:
    return secrets.token_hex(16)


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
            AcceptedEvent(
                meter_id=str(e["meter"]),
                event_name=str(e["name"]),
                identifier=str(e["identifier"]),
                customer=str(e["customer"]),
                value=str(e["value"]),
                timestamp_s=int(e["ts"]),
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
