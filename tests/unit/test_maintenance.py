"""Which meter_events partitions a retention pass drops, decided without a database."""

from __future__ import annotations

import pytest

from aggregator.maintenance.retention import (
    MaintenanceReport,
    expired_partitions,
    partition_upper_bound,
)

DAY = 86_400
# 2026-03-10T00:00:00Z
MAR_10 = 1_773_100_800


def _day(start: int) -> tuple[str, str]:
    return (f"meter_events_{start}", f"FOR VALUES FROM ('{start}') TO ('{start + DAY}')")


@pytest.mark.parametrize(
    ("bound", "upper"),
    [
        ("FOR VALUES FROM ('1773100800') TO ('1773187200')", 1_773_187_200),
        ("FOR VALUES FROM (1773100800) TO (1773187200)", 1_773_187_200),
        ("FOR VALUES FROM ('-86400') TO ('0')", 0),
        ("DEFAULT", None),
        ("FOR VALUES FROM (MINVALUE) TO (MAXVALUE)", None),
    ],
)
def test_reads_the_exclusive_upper_bound(bound: str, upper: int | None) -> None:
    assert partition_upper_bound(bound) == upper


def test_a_day_expires_only_once_all_of_it_is_older_than_the_retention() -> None:
    now = MAR_10 + DAY + 37 * DAY + 3600
    days = [_day(MAR_10 - DAY), _day(MAR_10), _day(MAR_10 + DAY)]
    # March 10 ended 37 days and an hour before `now`; March 11 ended only 36 days and an hour
    # before it, so some of its events are still within the retention.
    assert expired_partitions(days, now_s=now, retention_days=37) == [
        days[0][0],
        days[1][0],
    ]


def test_a_day_ending_exactly_at_the_cutoff_is_expired() -> None:
    day = _day(MAR_10)
    assert expired_partitions([day], now_s=MAR_10 + DAY + 37 * DAY, retention_days=37) == [day[0]]
    assert expired_partitions([day], now_s=MAR_10 + DAY + 37 * DAY - 1, retention_days=37) == []


def test_default_and_unbounded_partitions_never_expire() -> None:
    partitions = [("meter_events_default", "DEFAULT"), ("odd", "FOR VALUES IN ('x')")]
    assert expired_partitions(partitions, now_s=MAR_10 * 2, retention_days=1) == []


def test_report_summary_names_what_went() -> None:
    report = MaintenanceReport(
        rows_pruned={"event_identifiers": 3, "idempotency_keys": 0},
        partitions_dropped=["meter_events_20260101"],
    )
    assert report.summary() == (
        "pruned 3 from event_identifiers, 0 from idempotency_keys; "
        "dropped partitions: meter_events_20260101"
    )
    assert MaintenanceReport().summary() == "pruned nothing; dropped partitions: none"
