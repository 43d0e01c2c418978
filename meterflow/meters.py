"""Meters: how events of one name become usage (the ``billing.meter`` object)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from meterflow.windows import TimeWindow

Formula = Literal["sum", "count", "last"]
MeterStatus = Literal["active", "inactive"]

# The v1 events a meter's changes announce, each carrying the meter as it is after the change.
METER_CREATED = "billing.meter.created"
METER_UPDATED = "billing.meter.updated"
METER_DEACTIVATED = "billing.meter.deactivated"
METER_REACTIVATED = "billing.meter.reactivated"
METER_EVENT_TYPES = frozenset({METER_CREATED, METER_UPDATED, METER_DEACTIVATED, METER_REACTIVATED})


@dataclass(frozen=True, slots=True)
class Meter:
    seq: int
    id: str
    livemode: bool
    event_name: str
    display_name: str
    formula: Formula
    customer_key: str
    value_key: str
    event_time_window: TimeWindow | None
    status: MeterStatus
    created: int
    updated: int
    deactivated_at: int | None

    def to_stripe(self) -> dict[str, Any]:
        """The ``billing.meter`` object exactly as Stripe shapes it."""
        return {
            "id": self.id,
            "object": "billing.meter",
            "created": self.created,
            "customer_mapping": {"event_payload_key": self.customer_key, "type": "by_id"},
            "default_aggregation": {"formula": self.formula},
            "display_name": self.display_name,
            "event_name": self.event_name,
            "event_time_window": self.event_time_window,
            "livemode": self.livemode,
            "status": self.status,
            "status_transitions": {"deactivated_at": self.deactivated_at},
            "updated": self.updated,
            "value_settings": {"event_payload_key": self.value_key},
        }


@dataclass(frozen=True, slots=True)
class NewMeter:
    event_name: str
    display_name: str
    formula: Formula
    customer_key: str
    value_key: str
    event_time_window: TimeWindow | None
