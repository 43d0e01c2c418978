"""Meter events and adjustments: reading parameters and applying Stripe's rules, without I/O.

The endpoint modules look things up (the meter, a processed identifier) and hand the results to
the functions here, which decide: every synchronous rejection of an event is made in this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.edge.errors import InvalidRequest, ResourceMissing
from ingest.edge.params import Params
from ingest.events.identifiers import ProcessedEvent
from meterflow.meters import Meter
from meterflow.records.meter_events import AcceptedEvent
from meterflow.rules.events import (
    MAX_EVENT_NAME,
    MAX_IDENTIFIER,
    MAX_PAYLOAD_KEY_LENGTH,
    MAX_PAYLOAD_KEYS,
    MAX_PAYLOAD_VALUE_LENGTH,
    EventRuleFailure,
    format_rfc3339,
    parse_rfc3339,
)
from meterflow.rules.meter_events import SYNC_WORDING, apply_event_rules

CANCEL_WINDOW_MS = 24 * 60 * 60 * 1000
ADJUSTMENT_TYPES = ("cancel",)


@dataclass(frozen=True, slots=True)
class MeterEventRequest:
    event_name: str
    payload: dict[str, str]
    identifier: str | None  # None: the server generates one
    timestamp_s: int | None  # None: now


@dataclass(frozen=True, slots=True)
class CancelRequest:
    event_name: str
    identifier: str


def parse_meter_event_v1(params: Params) -> MeterEventRequest:
    """``POST /v1/billing/meter_events``: ``timestamp`` is integer unix seconds."""
    event_name, payload, identifier = _event_fields(params)
    timestamp_s = params.integer("timestamp")
    params.no_expansion()
    params.finish()
    return MeterEventRequest(event_name, payload, identifier, timestamp_s)


def parse_meter_event_v2(params: Params) -> MeterEventRequest:
    """``POST /v2/billing/meter_events``: ``timestamp`` is an RFC 3339 string."""
    event_name, payload, identifier = _event_fields(params)
    raw = params.string("timestamp")
    params.finish()
    timestamp_s = None
    if raw is not None:
        try:
            timestamp_s = parse_rfc3339(raw)
        except ValueError as exc:
            raise InvalidRequest(
                f"Invalid timestamp: {raw[:40]!r} is not an RFC 3339 date-time such as "
                "2024-06-01T12:00:00.000Z.",
                code="parameter_invalid",
                param="timestamp",
            ) from exc
    return MeterEventRequest(event_name, payload, identifier, timestamp_s)


def _event_fields(params: Params) -> tuple[str, dict[str, str], str | None]:
    event_name = params.required_string("event_name", max_length=MAX_EVENT_NAME, printable=True)
    payload = params.string_map(
        "payload",
        required=True,
        max_keys=MAX_PAYLOAD_KEYS,
        max_key_length=MAX_PAYLOAD_KEY_LENGTH,
        max_value_length=MAX_PAYLOAD_VALUE_LENGTH,
        printable=True,
    )
    assert payload is not None  # noqa: S101 - required=True
    identifier = params.string("identifier", max_length=MAX_IDENTIFIER, printable=True)
    return event_name, payload, identifier


def accept_event(
    event: MeterEventRequest, meter: Meter | None, *, identifier: str, now_s: int
) -> AcceptedEvent:
    """Apply Stripe's synchronous rules to one event for the meter its name routes to."""
    outcome = apply_event_rules(
        meter,
        event.event_name,
        event.payload,
        identifier,
        event.timestamp_s,
        now_s=now_s,
        wording=SYNC_WORDING,
    )
    if isinstance(outcome, EventRuleFailure):
        # The cause keeps both of Stripe's codes in a logged traceback, as before.
        raise InvalidRequest(
            outcome.message, code=outcome.sync_code, param=outcome.param
        ) from outcome.error()
    return outcome


def duplicate_event(identifier: str) -> InvalidRequest:
    # Stripe's observed v1 text, and the v2 code; retrying cannot succeed, so say so.
    return InvalidRequest(
        f"An event already exists with identifier {identifier}.",
        code="duplicate_meter_event",
        param="identifier",
        headers={"Stripe-Should-Retry": "false"},
    )


def parse_cancel(params: Params, *, expandable: bool) -> CancelRequest:
    """Adjustment parameters, v1 and v2: ``event_name``, ``type=cancel``, ``cancel[identifier]``."""
    event_name = params.required_string("event_name", max_length=MAX_EVENT_NAME, printable=True)
    params.choice("type", ADJUSTMENT_TYPES, required=True)
    cancel = params.object("cancel", required=True)
    assert cancel is not None  # noqa: S101 - required=True
    identifier = cancel.required_string("identifier", max_length=MAX_IDENTIFIER, printable=True)
    if expandable:
        params.no_expansion()
    params.finish()
    return CancelRequest(event_name, identifier)


def check_cancel(
    cancel: CancelRequest, processed: ProcessedEvent | None, *, now_ms: int
) -> ProcessedEvent:
    """The processed event this request may cancel; raises if it may not."""
    if processed is None:
        raise ResourceMissing(
            f"No processed meter event with identifier '{cancel.identifier}' exists. An event "
            "can be cancelled once it is processed, normally within a second of being accepted.",
            param="cancel[identifier]",
        )
    if processed.event_name != cancel.event_name:
        raise InvalidRequest(
            f"The event with identifier '{cancel.identifier}' was not sent with event_name "
            f"'{cancel.event_name}'; send the adjustment with the event's own event_name.",
            code="invalid_cancel_configuration",
            param="event_name",
        )
    if processed.received_ms < now_ms - CANCEL_WINDOW_MS:
        raise InvalidRequest(
            "Only events received within the last 24 hours can be cancelled; the event with "
            f"identifier '{cancel.identifier}' was received at "
            f"{format_rfc3339(processed.received_ms)}.",
            code="cancel_window_expired",
            param="cancel[identifier]",
        )
    return processed
