"""v1 events (``evt_…``): Stripe's snapshot events, listed by ``GET /v1/events``, put on the
events topic and delivered to webhook endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from meterflow.apikeys import random_token

# The version stamped on billing objects' events: the shape their ``data.object`` has.
BILLING_EVENT_API_VERSION = "2025-03-31.basil"


def new_v1_event_id() -> str:
    """``evt_…`` as Stripe names v1 events (no mode in the id, unlike v2 ``evt_test_…``)."""
    return f"evt_{random_token(24)}"


def snapshot_event(
    *,
    event_type: str,
    data_object: Mapping[str, Any],
    created: int,
    livemode: bool,
    api_version: str,
    previous_attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A v1 event carrying a snapshot of the object it is about (and, for ``*.updated``, the
    previous values of the fields that changed). ``pending_webhooks`` is 0 here; readers that
    know the delivery state fill in the live count."""
    data: dict[str, Any] = {"object": dict(data_object)}
    if previous_attributes is not None:
        data["previous_attributes"] = dict(previous_attributes)
    return {
        "id": new_v1_event_id(),
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def previous_attributes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The fields an update changed, with their values before it (a whole nested value when any
    part of it changed, as Stripe does)."""
    return {k: v for k, v in before.items() if after.get(k) != v}


def v1_event_key(account_id: str, livemode: bool) -> bytes:
    """The events topic's record key: one account's events stay in order on one partition."""
    return f"{account_id}:{'live' if livemode else 'test'}".encode()


def encode_v1_event(event: Mapping[str, Any]) -> bytes:
    """The events topic's record value: the event object as JSON."""
    return orjson.dumps(event)
