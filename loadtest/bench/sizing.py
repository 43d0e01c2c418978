"""Disk and memory for a deployment, from the bytes per event the storage phase measured.

Pure: measured sizes and the retention rules in, estimates and a markdown table out.

What each table holds after ``horizon_days`` of running at a steady rate (the retention rules of
aggregator/maintenance/retention.py, restated here because the bench may not import the
aggregator; tests/unit/test_bench_sizing.py checks the two agree):

- the dedupe set (``event_identifiers``): 48 hours of receipts, plus up to one maintenance
  interval before the next prune;
- raw events (``meter_events``): whole day partitions are dropped once older than the event
  retention (37 days by default), so ``min(horizon, retention + 1)`` days of events;
- rollups (``rollups_minute``, ``rollups_hour``, ``rollups_day``): never pruned. A row per
  (meter, customer) and minute, hour or day that had an event: with ``series`` active series and
  events arriving at random (Poisson), a series' minute holds an event with probability
  ``1 - exp(-events per series-minute)``, and so on for hours and days;
- transient rows (``usage_changes``): 24 hours, plus up to one maintenance interval.
``window_survivors`` (pre-aggregated meters only) is measured with the rollups but not
estimated here: it holds one row per series and window of those meters, kept for the event
retention.

Memory: the insert cost stays flat only while the pages inserts touch are cached. Identifiers
are random, so every page of the dedupe set's primary key takes inserts: all of its 48 hours
should fit in RAM (shared buffers plus the OS page cache). Raw events and rollups are appended
per series at the series' newest time, which touches about one leaf page per series in each of
four indexes (the raw events' window index and the three rollup keys): ``series x 4 x 8 KiB``.
Older raw partitions and rollup rows are read by queries, not by the fold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

HOUR_S = 3600
DAY_S = 86_400
PAGE_BYTES = 8192
HOT_INDEXES_PER_SERIES = 4  # meter_events' window index, rollups_minute/hour/day's keys
RATES = (1_000, 10_000, 50_000)
DEFAULT_SERIES = 100_000
_GB = 1e9


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each table keeps rows; the defaults are the pipeline's."""

    horizon_days: float = 35.0  # how long the deployment has been running
    dedupe_s: int = 48 * HOUR_S  # EVENT_IDENTIFIER_RETENTION_MS
    usage_changes_s: int = 24 * HOUR_S  # USAGE_CHANGE_RETENTION_MS
    event_retention_days: int = 37  # Settings.aggregator.event_retention_days
    maintenance_interval_s: float = 300.0  # Settings.aggregator.maintenance_interval_s

    def raw_days(self) -> float:
        """Days of raw events on disk: whole partitions older than the retention are dropped."""
        return min(self.horizon_days, self.event_retention_days + 1)


@dataclass(frozen=True, slots=True)
class MeasuredBytes:
    """Bytes on disk (tables with their indexes) per accepted event, and per rollup row."""

    dedupe_per_event: float
    dedupe_btree_per_event: float  # the primary key alone: the part inserts touch at random
    raw_per_event: float
    transient_per_event: float
    wal_per_event: float
    minute_row: float
    hour_row: float
    day_row: float


@dataclass(frozen=True, slots=True)
class Estimate:
    events_per_s: float
    series: int
    dedupe_bytes: float
    raw_bytes: float
    rollup_bytes: float
    transient_bytes: float
    wal_bytes_per_s: float
    hot_bytes: float  # what should fit in RAM: dedupe key + one leaf per series per hot index

    @property
    def disk_bytes(self) -> float:
        return self.dedupe_bytes + self.raw_bytes + self.rollup_bytes + self.transient_bytes


def active_share(events_per_window: float) -> float:
    """The share of a series' windows holding at least one event, events arriving at random."""
    return -math.expm1(-events_per_window) if events_per_window > 0 else 0.0


def rollup_rows(events_per_s: float, series: int, days: float) -> tuple[float, float, float]:
    """Minute, hour and day rollup rows written over ``days`` by ``series`` active series."""
    per_series = events_per_s / series
    return (
        series * days * 1440 * active_share(per_series * 60),
        series * days * 24 * active_share(per_series * HOUR_S),
        series * days * active_share(per_series * DAY_S),
    )


def estimate(
    measured: MeasuredBytes, retention: Retention, events_per_s: float, series: int
) -> Estimate:
    dedupe_events = events_per_s * (retention.dedupe_s + retention.maintenance_interval_s)
    minutes, hours, days = rollup_rows(events_per_s, series, retention.horizon_days)
    transient_s = retention.usage_changes_s + retention.maintenance_interval_s
    return Estimate(
        events_per_s=events_per_s,
        series=series,
        dedupe_bytes=dedupe_events * measured.dedupe_per_event,
        raw_bytes=events_per_s * retention.raw_days() * DAY_S * measured.raw_per_event,
        rollup_bytes=(
            minutes * measured.minute_row + hours * measured.hour_row + days * measured.day_row
        ),
        transient_bytes=events_per_s * transient_s * measured.transient_per_event,
        wal_bytes_per_s=events_per_s * measured.wal_per_event,
        hot_bytes=(
            dedupe_events * measured.dedupe_btree_per_event
            + series * HOT_INDEXES_PER_SERIES * PAGE_BYTES
        ),
    )


def sizing(
    measured: MeasuredBytes,
    retention: Retention = Retention(),
    rates: Sequence[float] = RATES,
    series: int = DEFAULT_SERIES,
) -> dict[str, Any]:
    """The estimates at each rate, with what they assume, as results.json keeps them."""
    estimates = [estimate(measured, retention, rate, series) for rate in rates]
    return {
        "measured": asdict(measured),
        "retention": asdict(retention) | {"raw_days": retention.raw_days()},
        "series": series,
        "estimates": [asdict(e) | {"disk_bytes": e.disk_bytes} for e in estimates],
    }


def _gb(value: float) -> str:
    return f"{value / _GB:,.1f} GB" if value < 100 * _GB else f"{value / _GB:,.0f} GB"


def sizing_markdown(table: dict[str, Any]) -> str:
    """A sizing table for the README to quote, with its assumptions under it."""
    r, m = table["retention"], table["measured"]
    lines = [
        f"| events/s | dedupe set ({r['dedupe_s'] // HOUR_S} h) | raw events "
        f"({r['raw_days']:g} days) | rollups ({r['horizon_days']:g} days) | usage_changes "
        f"({r['usage_changes_s'] // HOUR_S} h) | disk | WAL | RAM for the hot indexes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in table["estimates"]:
        wal = e["wal_bytes_per_s"]
        lines.append(
            f"| {e['events_per_s']:,.0f} | {_gb(e['dedupe_bytes'])} | {_gb(e['raw_bytes'])} | "
            f"{_gb(e['rollup_bytes'])} | {_gb(e['transient_bytes'])} | "
            f"**{_gb(e['disk_bytes'])}** | {wal / 1e6:,.1f} MB/s ({_gb(wal * DAY_S)}/day) | "
            f"{_gb(e['hot_bytes'])} |"
        )
    lines += [
        "",
        f"Measured per accepted event: dedupe set {m['dedupe_per_event']:,.0f} bytes (primary "
        f"key {m['dedupe_btree_per_event']:,.0f}), raw events {m['raw_per_event']:,.0f}, "
        f"usage_changes {m['transient_per_event']:,.0f}, WAL {m['wal_per_event']:,.0f}; per "
        f"rollup row: minute {m['minute_row']:,.0f}, hour {m['hour_row']:,.0f}, day "
        f"{m['day_row']:,.0f} bytes (tables with their indexes). After "
        f"{r['horizon_days']:g} days with {table['series']:,} active (meter, customer) series "
        "receiving events at random. Rollups are never pruned and keep growing; raw events stop "
        f"growing at {r['event_retention_days']} days (+1 partial day). WAL is what PostgreSQL "
        "writes, not what it keeps (max_wal_size bounds that): it is what replication and WAL "
        "archiving must carry. RAM: the dedupe set's whole primary key (inserts land at random "
        f"in it) plus one 8 KiB leaf per series in each of {HOT_INDEXES_PER_SERIES} indexes the "
        "fold appends to; beyond it, each insert may wait for a disk read. PostgreSQL's and the "
        "processes' own memory come on top.",
    ]
    return "\n".join(lines) + "\n"
