"""``meter_event_stream`` bodies: structural checks (answered 400) and per-event semantic checks
(reported asynchronously), both without I/O.

A request is refused as a whole only when its shape is wrong: not a JSON object, ``events``
missing or outside 1..100, an event that is not an object, fields of the wrong type or too long,
an unknown field, a timestamp that is not RFC 3339. Everything that depends on the meter (does it
exist, is it active, which payload keys hold the customer and value, is the value a number, is
the timestamp within bounds) is checked per event after the request is accepted, by the engine
the synchronous endpoints share (:mod:`meterflow.rules.meter_events`); a failure becomes a
:class:`~meterflow.records.rejected.Rejection` with Stripe's asynchronous code.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, NamedTuple

from ingest.edge.errors import InvalidRequest
from ingest.edge.params import control_character
from meterflow.meters import Meter
from meterflow.records.meter_events import AcceptedEvent
from meterflow.records.rejected import Rejection
from meterflow.rules.events import (
    MAX_EVENT_NAME,
    MAX_IDENTIFIER,
    MAX_PAYLOAD_KEY_LENGTH,
    MAX_PAYLOAD_KEYS,
    MAX_PAYLOAD_VALUE_LENGTH,
    EventRuleFailure,
    parse_rfc3339,
)
from meterflow.rules.meter_events import STREAM_WORDING, apply_event_rules

MAX_STREAM_EVENTS = 100
_EVENT_FIELDS = frozenset(("event_name", "payload", "identifier", "timestamp"))


class StreamEvent(NamedTuple):
    """One structurally valid stream event (a named tuple: up to 100 are built per request)."""

    event_name: str
    payload: dict[str, str]
    identifier: str
    identifier_given: bool
    timestamp_s: int | None
    original: dict[str, Any]


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_request", param=param)


def _string(event: dict[str, Any], field: str, where: str, max_length: int) -> str | None:
    value = event.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(f"{where}.{field} must be a string.", f"{where}.{field}")
    if len(value) > max_length:
        raise _bad(f"{where}.{field} is longer than {max_length} characters.", f"{where}.{field}")
    if (found := control_character(value, printable=True)) is not None:
        raise _bad(f"{where}.{field} contains a control character ({found}).", f"{where}.{field}")
    return value


def _payload(event: dict[str, Any], where: str) -> dict[str, str]:
    payload = event.get("payload")
    if not isinstance(payload, dict):
        raise _bad(f"{where}.payload is required and must be an object of strings.",
                   f"{where}.payload")  # fmt: skip
    if len(payload) > MAX_PAYLOAD_KEYS:
        raise _bad(f"{where}.payload has more than {MAX_PAYLOAD_KEYS} keys.", f"{where}.payload")
    for key, value in payload.items():
        if not isinstance(value, str):
            raise _bad(f"{where}.payload.{key[:40]} must be a string.", f"{where}.payload")
        found = control_character(key, printable=True) or control_character(value, printable=True)
        if found is not None:
            raise _bad(
                f"{where}.payload contains a control character ({found}).", f"{where}.payload"
            )
        if len(key) > MAX_PAYLOAD_KEY_LENGTH or len(value) > MAX_PAYLOAD_VALUE_LENGTH:
            raise _bad(
                f"{where}.payload keys are limited to {MAX_PAYLOAD_KEY_LENGTH} characters and "
                f"values to {MAX_PAYLOAD_VALUE_LENGTH}.",
                f"{where}.payload",
            )
    return payload


def _generated_identifier(idempotency_key: str | None, index: int) -> str:
    # A retried request (same Idempotency-Key) regenerates the same identifiers, so the events it
    # carries again are duplicates rather than new usage.
    if idempotency_key:
        digest = hashlib.sha256(f"{idempotency_key}\x00{index}".encode()).hexdigest()
        return "idk_" + digest[:40]
    return uuid.uuid4().hex


def parse_stream_body(
    document: dict[str, Any], idempotency_key: str | None = None
) -> list[StreamEvent]:
    """The events of a stream request (its decoded JSON body), or a 400 naming what is
    structurally wrong."""
    unknown = set(document) - {"events"}
    if unknown:
        name = sorted(unknown)[0][:40]
        raise InvalidRequest(f"Received unknown parameter: {name}", code="parameter_unknown",
                             param=name)  # fmt: skip
    events = document.get("events")
    if not isinstance(events, list) or not events:
        raise _bad("events is required: an array of 1 to 100 meter events.", "events")
    if len(events) > MAX_STREAM_EVENTS:
        raise _bad(
            f"events has {len(events)} items; a stream request takes at most {MAX_STREAM_EVENTS}.",
            "events",
        )
    return [_stream_event(raw, i, idempotency_key) for i, raw in enumerate(events)]


def _stream_event(raw: Any, index: int, idempotency_key: str | None) -> StreamEvent:
    where = f"events[{index}]"
    if not isinstance(raw, dict):
        raise _bad(f"{where} must be an object.", where)
    if not raw.keys() <= _EVENT_FIELDS:
        name = sorted(set(raw) - _EVENT_FIELDS)[0][:40]
        raise InvalidRequest(f"Received unknown parameter: {where}.{name}",
                             code="parameter_unknown", param=f"{where}.{name}")  # fmt: skip
    event_name = _string(raw, "event_name", where, MAX_EVENT_NAME)
    if not event_name:
        raise _bad(f"{where}.event_name is required.", f"{where}.event_name")
    identifier = _string(raw, "identifier", where, MAX_IDENTIFIER)
    timestamp = _string(raw, "timestamp", where, 64)
    timestamp_s = None
    if timestamp is not None:
        try:
            timestamp_s = parse_rfc3339(timestamp)
        except ValueError as exc:
            raise _bad(
                f"{where}.timestamp is not an RFC 3339 date-time such as 2024-06-01T12:00:00.000Z.",
                f"{where}.timestamp",
            ) from exc
    return StreamEvent(
        event_name=event_name,
        payload=_payload(raw, where),
        identifier=identifier or _generated_identifier(idempotency_key, index),
        identifier_given=bool(identifier),
        timestamp_s=timestamp_s,
        original=raw,
    )


def check_stream_event(
    event: StreamEvent, meter: Meter | None, *, now_s: int
) -> AcceptedEvent | Rejection:
    """Apply the meter's rules to one accepted stream event."""
    outcome = apply_event_rules(
        meter,
        event.event_name,
        event.payload,
        event.identifier,
        event.timestamp_s,
        now_s=now_s,
        wording=STREAM_WORDING,
    )
    if isinstance(outcome, EventRuleFailure):
        return Rejection(
            code=outcome.async_code,
            message=outcome.message,
            meter_id=meter.id if meter is not None else None,
            event_name=event.event_name,
            identifier=event.identifier,
            event=event.original,
        )
    return outcome
