"""Error reports: rejected stream events counted per validation window, and a closed window turned
into the ``data`` of Stripe's thin events (pure).

Rejections are grouped per (account, mode, meter or none, validation window by receipt time,
code): a count and the first :data:`MAX_SAMPLES` errors. A closed window of one meter becomes one
``v1.billing.meter.error_report_triggered`` event; the ``no_meter`` rejections of a window, which
belong to no meter, become one ``v1.billing.meter.no_meter_found`` event.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aggregator.webhooks.core_events import CoreEvent
from meterflow.records.rejected import RejectedRecord
from meterflow.rules.events import format_rfc3339

MAX_SAMPLES = 5
NO_METER = "no_meter"
ERROR_REPORT_TRIGGERED = "v1.billing.meter.error_report_triggered"
NO_METER_FOUND = "v1.billing.meter.no_meter_found"
REPORT_EVENT_TYPES = (ERROR_REPORT_TRIGGERED, NO_METER_FOUND)


@dataclass(frozen=True, slots=True, order=True)
class WindowCode:
    """One tally's key. ``meter_id`` is ``""`` for rejections that matched no meter."""

    account_id: str
    livemode: bool
    meter_id: str
    window_start_ms: int
    code: str


@dataclass(frozen=True, slots=True)
class Sample:
    error_message: str
    identifier: str


@dataclass(slots=True)
class CodeTally:
    window_end_ms: int
    error_count: int = 0
    samples: list[Sample] = field(default_factory=list)


def window_start(received_ms: int, window_ms: int) -> int:
    """The start of the epoch-aligned window ``[start, start + window_ms)`` holding the time."""
    return received_ms - received_ms % window_ms


def tally_rejections(
    records: Iterable[RejectedRecord], window_ms: int
) -> dict[WindowCode, CodeTally]:
    """Count the rejections of ``records`` per window and code, keeping the first samples."""
    tallies: dict[WindowCode, CodeTally] = {}
    for record in records:
        start = window_start(record.received_ms, window_ms)
        for rejection in record.rejections:
            meter = "" if rejection.code == NO_METER else rejection.meter_id or ""
            key = WindowCode(record.account_id, record.livemode, meter, start, rejection.code)
            tally = tallies.get(key)
            if tally is None:
                tally = tallies[key] = CodeTally(window_end_ms=start + window_ms)
            tally.error_count += 1
            if len(tally.samples) < MAX_SAMPLES:
                tally.samples.append(Sample(rejection.message, rejection.identifier))
    return tallies


# -- closing a window ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredTally:
    """A stored tally of a window that has closed; ``seq`` identifies the stored row."""

    seq: int
    key: WindowCode
    window_end_ms: int
    error_count: int
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """Everything one closed window of one meter (or of no meter) reports."""

    account_id: str
    livemode: bool
    meter_id: str
    window_start_ms: int
    window_end_ms: int
    first_seq: int
    tallies: tuple[StoredTally, ...]

    @property
    def error_count(self) -> int:
        return sum(t.error_count for t in self.tallies)

    @property
    def event_type(self) -> str:
        return ERROR_REPORT_TRIGGERED if self.meter_id else NO_METER_FOUND

    @property
    def source_key(self) -> str:
        """Names the report among the account's events: its window and the rows it covers."""
        return f"{self.event_type}:{self.meter_id}:{self.window_start_ms}:{self.first_seq}"


def group_reports(tallies: Iterable[StoredTally]) -> list[ErrorReport]:
    """One report per (account, mode, meter, window), codes with the most errors first."""
    windows: dict[tuple[str, bool, str, int], list[StoredTally]] = {}
    for tally in tallies:
        key = tally.key
        windows.setdefault(
            (key.account_id, key.livemode, key.meter_id, key.window_start_ms), []
        ).append(tally)
    reports = []
    for (account_id, livemode, meter_id, start_ms), members in sorted(windows.items()):
        members.sort(key=lambda t: (-t.error_count, t.key.code))
        reports.append(
            ErrorReport(
                account_id=account_id,
                livemode=livemode,
                meter_id=meter_id,
                window_start_ms=start_ms,
                window_end_ms=max(t.window_end_ms for t in members),
                first_seq=min(t.seq for t in members),
                tallies=tuple(members),
            )
        )
    return reports


def developer_message_summary(error_count: int) -> str:
    """``"There is 1 invalid event"``, ``"There are 3 invalid events"``."""
    if error_count == 1:
        return "There is 1 invalid event"
    return f"There are {error_count} invalid events"


def report_data(report: ErrorReport) -> dict[str, Any]:
    """The event's ``data``, shaped as Stripe's meter error events."""
    return {
        "developer_message_summary": developer_message_summary(report.error_count),
        "reason": {
            "error_count": report.error_count,
            "error_types": [
                {
                    "code": tally.key.code,
                    "error_count": tally.error_count,
                    "sample_errors": [
                        {
                            "error_message": sample.error_message,
                            "request": {"identifier": sample.identifier},
                        }
                        for sample in tally.samples
                    ],
                }
                for tally in report.tallies
            ],
        },
        "validation_end": format_rfc3339(report.window_end_ms),
        "validation_start": format_rfc3339(report.window_start_ms),
    }


def meter_reference(meter_id: str) -> dict[str, str] | None:
    """The event's ``related_object``: the meter, or nothing for ``no_meter_found``."""
    if not meter_id:
        return None
    return {"id": meter_id, "type": "billing.meter", "url": f"/v1/billing/meters/{meter_id}"}


def report_event(report: ErrorReport, *, event_id: str, created_ms: int) -> CoreEvent:
    """The v2 core event announcing ``report``."""
    return CoreEvent(
        id=event_id,
        account_id=report.account_id,
        livemode=report.livemode,
        type=report.event_type,
        created_ms=created_ms,
        related_object=meter_reference(report.meter_id),
        data=report_data(report),
        source_key=report.source_key,
    )
