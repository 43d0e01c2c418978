"""Which rejected events a re-drive takes, and what becomes of each one (pure: no I/O here).

A re-drive reads the rejected-events topic, keeps the rejections its :class:`RedriveFilter`
selects and checks each again with the stream's rules (:mod:`meterflow.rules.meter_events`)
against the meter its name routes to now. Each keeps its original identifier and timestamp (the
time of the original request when the event had none), so that the aggregator's dedupe makes a
second re-drive of the same event harmless. Outcomes:

* ``accepted``: valid now; published to the meter-events topic;
* ``duplicate``: its identifier was already folded, already re-driven, or came earlier in this
  re-drive; nothing is published;
* ``rejected``: fails again; published back to the rejected-events topic with the new code,
  where the error reports pick it up as a fresh rejection;
* ``too_old``: its timestamp is now more than 35 days back (``timestamp_too_far_in_past``):
  listed by identifier in the outcome, and published back to the rejected-events topic too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meterflow.meters import Meter
from meterflow.records.meter_events import AcceptedEvent
from meterflow.records.rejected import RejectedRecord, Rejection
from meterflow.rules.events import EventRuleFailure, format_rfc3339, parse_rfc3339
from meterflow.rules.meter_events import STREAM_WORDING, apply_event_rules

Outcome = Literal["accepted", "duplicate", "rejected", "too_old"]
OUTCOMES: tuple[Outcome, ...] = ("accepted", "duplicate", "rejected", "too_old")
TOO_OLD_CODE = "timestamp_too_far_in_past"


@dataclass(frozen=True, slots=True)
class RedriveFilter:
    """What a re-drive selects; an empty or ``None`` field selects everything."""

    account_id: str | None = None
    livemode: bool | None = None
    codes: frozenset[str] = frozenset()
    meter_ids: frozenset[str] = frozenset()
    event_names: frozenset[str] = frozenset()
    rejected_from_ms: int | None = None  # when the rejection was made (the record's receipt)
    rejected_until_ms: int | None = None  # exclusive

    def takes_record(self, record: RejectedRecord) -> bool:
        return (
            (self.account_id is None or record.account_id == self.account_id)
            and (self.livemode is None or record.livemode == self.livemode)
            and (self.rejected_from_ms is None or record.received_ms >= self.rejected_from_ms)
            and (self.rejected_until_ms is None or record.received_ms < self.rejected_until_ms)
        )

    def takes(self, rejection: Rejection) -> bool:
        return (
            (not self.codes or rejection.code in self.codes)
            and (not self.meter_ids or rejection.meter_id in self.meter_ids)
            and (not self.event_names or rejection.event_name in self.event_names)
        )

    def as_document(self) -> dict[str, Any]:
        return {
            "account": self.account_id,
            "livemode": self.livemode,
            "codes": sorted(self.codes),
            "meters": sorted(self.meter_ids),
            "event_names": sorted(self.event_names),
            "rejected_from_ms": self.rejected_from_ms,
            "rejected_until_ms": self.rejected_until_ms,
        }


@dataclass(slots=True)
class RedriveCounts:
    """Progress and outcomes of one re-drive."""

    records_total: int = 0
    records_read: int = 0
    matched: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    rejected_codes: Counter[str] = field(default_factory=Counter)
    too_old: list[str] = field(default_factory=list)

    def outcome_counts(self) -> dict[str, int]:
        return {outcome: self.outcomes[outcome] for outcome in OUTCOMES}


def event_time(rejection: Rejection, received_ms: int) -> int:
    """The event's own timestamp, or the time of the request that carried it when it had none."""
    raw = rejection.event.get("timestamp")
    if isinstance(raw, str):
        try:
            return parse_rfc3339(raw)
        except ValueError:
            pass  # the stream refuses such a request whole; this rejection came from elsewhere
    return received_ms // 1000


def payload_of(rejection: Rejection) -> dict[str, str]:
    payload = rejection.event.get("payload")
    if not isinstance(payload, Mapping):
        return {}
    return {str(k): v for k, v in payload.items() if isinstance(v, str)}


def check_again(
    rejection: Rejection, received_ms: int, meter: Meter | None, *, now_s: int
) -> AcceptedEvent | EventRuleFailure:
    """The stream's rules for the event as it was sent, against ``meter`` as it is now."""
    return apply_event_rules(
        meter,
        rejection.event_name,
        payload_of(rejection),
        rejection.identifier,
        event_time(rejection, received_ms),
        now_s=now_s,
        wording=STREAM_WORDING,
    )


def rejected_again(
    rejection: Rejection, received_ms: int, failure: EventRuleFailure, meter: Meter | None
) -> Rejection:
    """The rejection to publish for an event that failed again: the new code and message, and
    the event with its identifier and timestamp written in, so a later re-drive keeps them."""
    event = dict(rejection.event)
    if not event.get("identifier"):
        event["identifier"] = rejection.identifier
    if not isinstance(event.get("timestamp"), str):
        event["timestamp"] = format_rfc3339(event_time(rejection, received_ms) * 1000)
    return Rejection(
        code=failure.async_code,
        message=failure.message,
        meter_id=meter.id if meter is not None else None,
        event_name=rejection.event_name,
        identifier=rejection.identifier,
        event=event,
    )
