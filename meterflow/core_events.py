"""The envelope of a v2 core event (Stripe's thin event), as ``GET /v2/core/events`` answers it
and as webhook endpoints receive it.

Stripe's API spec has ``context``, ``reason`` and ``related_object`` optional and not nullable:
a field without a value is left out, never sent as ``null``. meterflow acts for no connected
account (no ``context``) and records no request behind its events (no ``reason``); an event about
no object (``v1.billing.meter.no_meter_found``) has no ``related_object``.
"""

from __future__ import annotations

from typing import Any

from meterflow.rules.events import format_rfc3339

OBJECT = "v2.core.event"


def event_envelope(
    *, event_id: str, event_type: str, created_ms: int, livemode: bool, related_object: object
) -> dict[str, Any]:
    """The fields every v2 event carries; ``related_object`` is left out when it is None."""
    envelope: dict[str, Any] = {
        "id": event_id,
        "object": OBJECT,
        "type": event_type,
        "created": format_rfc3339(created_ms),
        "livemode": livemode,
    }
    if related_object is not None:
        envelope["related_object"] = related_object
    return envelope
