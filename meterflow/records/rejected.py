"""The wire contract of the rejected-events topic: stream events that failed validation.

``POST /v2/billing/meter_event_stream`` answers once the request is structurally sound; each
event is then checked against its meter. The ones that fail are never dropped silently: they are
published here, with Stripe's asynchronous error code and the original event, and error reports
are built from this topic. One record holds the rejections of one request (JSON, orjson):

    {"v": 1, "account": "acct_…", "live": false, "received_ms": 1717243200123,
     "rejections": [{"code": "no_meter", "message": "No meter was found matching event_name …",
                     "meter": null, "event_name": "…", "identifier": "…",
                     "event": {"event_name": …, "payload": {…}, "identifier": …, "timestamp": …}}]}

``meter`` is the meter id when one matched the event name (``null`` for ``no_meter``). ``event``
is the event as the client sent it. The record key is ``account:mode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from meterflow.records.meter_events import RecordDecodeError

RECORD_VERSION = 1


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str  # one of Stripe's asynchronous codes, e.g. "no_meter", "meter_event_invalid_value"
    message: str
    meter_id: str | None
    event_name: str
    identifier: str
    event: dict[str, Any]  # the original event object


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    account_id: str
    livemode: bool
    received_ms: int
    rejections: tuple[Rejection, ...]


def rejected_key(account_id: str, livemode: bool) -> bytes:
    return f"{account_id}:{'live' if livemode else 'test'}".encode()


def encode_rejected(record: RejectedRecord) -> bytes:
    return orjson.dumps(
        {
            "v": RECORD_VERSION,
            "account": record.account_id,
            "live": record.livemode,
            "received_ms": record.received_ms,
            "rejections": [
                {
                    "code": r.code,
                    "message": r.message,
                    "meter": r.meter_id,
                    "event_name": r.event_name,
                    "identifier": r.identifier,
                    "event": r.event,
                }
                for r in record.rejections
            ],
        }
    )


def decode_rejected(raw: bytes) -> RejectedRecord:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordDecodeError(f"malformed rejected-events record: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != RECORD_VERSION:
        raise RecordDecodeError("not a version 1 rejected-events record")
    try:
        return _from_document(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordDecodeError(f"malformed rejected-events record: {exc}") from exc


def _from_document(doc: dict[str, Any]) -> RejectedRecord:
    return RejectedRecord(
        account_id=str(doc["account"]),
        livemode=bool(doc["live"]),
        received_ms=int(doc["received_ms"]),
        rejections=tuple(
            Rejection(
                code=str(r["code"]),
                message=str(r["message"]),
                meter_id=None if r["meter"] is None else str(r["meter"]),
                event_name=str(r["event_name"]),
                identifier=str(r["identifier"]),
                event=dict(r["event"]),
            )
            for r in doc["rejections"]
        ),
    )
