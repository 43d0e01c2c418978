"""The objects the meter event endpoints answer with, shaped exactly as Stripe shapes them."""

from __future__ import annotations

from typing import Any

from meterflow.rules.events import format_rfc3339


def v1_meter_event(
    *,
    event_name: str,
    identifier: str,
    livemode: bool,
    payload: dict[str, str],
    timestamp_s: int,
    received_ms: int,
) -> dict[str, Any]:
    """``billing.meter_event``: unix seconds; no ``id``."""
    return {
        "object": "billing.meter_event",
        "created": received_ms // 1000,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": livemode,
        "payload": payload,
        "timestamp": timestamp_s,
    }


def v2_meter_event(
    *,
    event_name: str,
    identifier: str,
    livemode: bool,
    payload: dict[str, str],
    timestamp_s: int,
    received_ms: int,
) -> dict[str, Any]:
    """``v2.billing.meter_event``: the v1 fields with RFC 3339 times."""
    v1 = v1_meter_event(
        event_name=event_name,
        identifier=identifier,
        livemode=livemode,
        payload=payload,
        timestamp_s=timestamp_s,
        received_ms=received_ms,
    )
    return {
        **v1,
        "object": "v2.billing.meter_event",
        "created": format_rfc3339(received_ms),
        "timestamp": format_rfc3339(timestamp_s * 1000),
    }


def v1_cancel_adjustment(*, event_name: str, identifier: str, livemode: bool) -> dict[str, Any]:
    """``billing.meter_event_adjustment``: no ``id`` and no ``created``."""
    return {
        "object": "billing.meter_event_adjustment",
        "livemode": livemode,
        "status": "pending",
        "event_name": event_name,
        "type": "cancel",
        "cancel": {"identifier": identifier},
    }


def v2_cancel_adjustment(
    *, adjustment_id: str, event_name: str, identifier: str, livemode: bool, received_ms: int
) -> dict[str, Any]:
    """``v2.billing.meter_event_adjustment``."""
    return {
        "id": adjustment_id,
        "object": "v2.billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "created": format_rfc3339(received_ms),
        "event_name": event_name,
        "livemode": livemode,
        "status": "pending",
        "type": "cancel",
    }
