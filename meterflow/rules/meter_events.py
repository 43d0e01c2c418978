"""One engine for Stripe's per-event rules, shared by the synchronous endpoints and the stream.

:func:`apply_event_rules` checks one event against the meter its name routes to, every rule once
and always in this order, and returns the :class:`~meterflow.records.meter_events.AcceptedEvent`
or the first :class:`~meterflow.rules.events.EventRuleFailure`:

1. a meter exists for the event name (``no_meter``);
2. the meter is active (``archived_meter``);
3. the payload holds the meter's customer key, then its value key (a count meter's event may
   leave the value out: counting ignores it);
4. the value is a decimal number of at most 15 significant digits;
5. the timestamp (``now_s`` when the event has none) is within Stripe's bounds.

A failure carries both of Stripe's codes (the synchronous one and the one in asynchronous error
reports) and the synchronous ``param``; each caller picks what it reports. The two paths word the
meter rules (1 and 2) differently, so the wording is data, a :class:`MeterRuleWording` per path;
every other message reads the same on both. Pure and exception-free: the stream runs this per
event, up to ~100k times a second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from meterflow.meters import Meter
from meterflow.records.meter_events import AcceptedEvent
from meterflow.rules.events import (
    EventRuleFailure,
    find_customer_and_value,
    timestamp_failure,
    value_failure,
)


class MeterRuleWording(NamedTuple):
    """How one path words the two meter rules: a formatter per rule (f-strings, not
    :meth:`str.format` templates, which cost several times more per rejected event)."""

    no_meter: Callable[[str], str]  # (event_name)
    archived_meter: Callable[[str, str], str]  # (event_name, meter_id)


SYNC_WORDING = MeterRuleWording(
    no_meter=lambda event_name: (
        f"No meter exists for event_name '{event_name}'. A meter must exist, in this account "
        "and mode, before it can receive events."
    ),
    archived_meter=lambda event_name, meter_id: (
        f"The meter {meter_id} for event_name '{event_name}' is inactive. A meter must be "
        "active to receive events; reactivate it first."
    ),
)
"""``POST /v1|v2/billing/meter_events``: answered to the client, so they say what to do."""

STREAM_WORDING = MeterRuleWording(
    no_meter=lambda event_name: f"No meter was found matching event_name {event_name}.",
    archived_meter=lambda event_name, meter_id: (
        f"The meter {meter_id} is inactive; it does not accept events."
    ),
)
"""``meter_event_stream``: Stripe's texts in asynchronous error reports."""


def apply_event_rules(
    meter: Meter | None,
    event_name: str,
    payload: dict[str, str],
    identifier: str,
    timestamp_s: int | None,
    *,
    now_s: int,
    wording: MeterRuleWording,
) -> AcceptedEvent | EventRuleFailure:
    """The accepted event, or the first rule it breaks (see the module docstring for the order)."""
    if meter is None:
        return EventRuleFailure(
            "no_meter",
            "no_meter",
            wording.no_meter(event_name),
            "event_name",
        )
    if meter.status != "active":
        return EventRuleFailure(
            "archived_meter",
            "archived_meter",
            wording.archived_meter(event_name, meter.id),
            "event_name",
        )
    found = find_customer_and_value(
        payload, meter.customer_key, meter.value_key, value_required=meter.formula != "count"
    )
    if isinstance(found, EventRuleFailure):
        return found
    customer, value = found
    failure = value_failure(value, meter.value_key)
    if failure is not None:
        return failure
    if timestamp_s is None:
        timestamp_s = now_s
    failure = timestamp_failure(timestamp_s, now_s)
    if failure is not None:
        return failure
    # Positional: this runs once per event on the stream's hot path.
    return AcceptedEvent(meter.id, event_name, identifier, customer, value, timestamp_s)
