"""Sizing from measured bytes per event: the retention it assumes, the rollup rows, the table."""

from __future__ import annotations

import math

import pytest

from aggregator.maintenance.retention import (
    EVENT_IDENTIFIER_RETENTION_MS,
    USAGE_CHANGE_RETENTION_MS,
)
from loadtest.bench.sizing import (
    DAY_S,
    MeasuredBytes,
    Retention,
    active_share,
    estimate,
    rollup_rows,
    sizing,
    sizing_markdown,
)
from meterflow.settings.roles import AggregatorSettings

MEASURED = MeasuredBytes(
    dedupe_per_event=200.0,
    dedupe_btree_per_event=80.0,
    raw_per_event=300.0,
    transient_per_event=10.0,
    wal_per_event=1000.0,
    minute_row=150.0,
    hour_row=160.0,
    day_row=170.0,
)


def test_the_retention_is_the_pipelines() -> None:
    retention = Retention()
    assert retention.dedupe_s * 1000 == EVENT_IDENTIFIER_RETENTION_MS
    assert retention.usage_changes_s * 1000 == USAGE_CHANGE_RETENTION_MS
    settings = AggregatorSettings()
    assert retention.event_retention_days == settings.event_retention_days
    assert retention.maintenance_interval_s == settings.maintenance_interval_s


def test_raw_events_stop_growing_at_the_retention_plus_a_partial_day() -> None:
    assert Retention(horizon_days=35).raw_days() == 35
    assert Retention(horizon_days=90, event_retention_days=37).raw_days() == 38


def test_a_windows_share_with_an_event_follows_poisson() -> None:
    assert active_share(0) == 0
    assert active_share(1) == pytest.approx(1 - math.exp(-1))
    assert active_share(50) == pytest.approx(1)


def test_dense_series_write_every_minute_and_sparse_ones_one_row_per_event() -> None:
    minutes, hours, days = rollup_rows(10_000, 1000, 1)
    assert (minutes, hours, days) == pytest.approx((1000 * 1440, 1000 * 24, 1000))
    minutes, _, _ = rollup_rows(1, 1_000_000, 1)
    assert minutes == pytest.approx(DAY_S, rel=1e-3)  # each event alone in its minute


def test_an_estimate_multiplies_rates_retentions_and_bytes() -> None:
    e = estimate(MEASURED, Retention(horizon_days=35), 1000, 1000)
    assert e.dedupe_bytes == pytest.approx(1000 * (48 * 3600 + 300) * 200)
    assert e.raw_bytes == pytest.approx(1000 * 35 * DAY_S * 300)
    assert e.transient_bytes == pytest.approx(1000 * (24 * 3600 + 300) * 10)
    minutes, hours, days = rollup_rows(1000, 1000, 35)
    assert e.rollup_bytes == pytest.approx(minutes * 150 + hours * 160 + days * 170)
    assert e.wal_bytes_per_s == 1_000_000
    assert e.hot_bytes == pytest.approx(1000 * (48 * 3600 + 300) * 80 + 1000 * 4 * 8192)
    assert e.disk_bytes == pytest.approx(
        e.dedupe_bytes + e.raw_bytes + e.rollup_bytes + e.transient_bytes
    )


def test_the_table_has_a_row_per_rate_and_states_its_assumptions() -> None:
    table = sizing(MEASURED, series=10_000)
    assert [e["events_per_s"] for e in table["estimates"]] == [1_000, 10_000, 50_000]
    text = sizing_markdown(table)
    lines = text.splitlines()
    assert lines[0].startswith("| events/s | dedupe set (48 h) | raw events (35 days)")
    assert lines[2].startswith("| 1,000 | ")
    assert lines[4].startswith("| 50,000 | ")
    assert "10,000 active (meter, customer) series" in text
    assert "primary key 80" in text
