"""The preload's pure parts: sizes, chunks, days, index rebuild statements."""

from __future__ import annotations

import pytest

from aggregator.rollups.store import _partition_name as aggregator_partition_name
from loadtest.bench.preload import (
    RESERVE_BYTES,
    IndexDefinition,
    chunks,
    create_statements,
    day_spans,
    disk_needed,
    drop_statement,
    parse_sizes,
    partition_name,
    raw_events_for,
    should_rebuild,
    spread,
    uncovered_days,
)

DAY = 86_400


def test_sizes_are_a_comma_separated_increasing_list() -> None:
    assert parse_sizes("0,10_000_000,5e7") == (0, 10_000_000, 50_000_000)
    assert parse_sizes("1000000") == (1_000_000,)


@pytest.mark.parametrize("text", ["", "10,5", "-1", "1,,x"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r".*"):
        parse_sizes(text)


def test_raw_events_follow_the_ratio() -> None:
    assert raw_events_for(50_000_000, 2.0) == 100_000_000
    assert raw_events_for(3, 0.5) == 2


@pytest.mark.parametrize(
    ("present", "adding", "rebuild"),
    [(0, 10, True), (800_000, 10_000_000, True), (10, 10, True), (10_000_000, 5, False),
     (0, 0, False)],
)  # fmt: skip
def test_indexes_are_rebuilt_when_the_load_at_least_doubles_the_table(
    present: int, adding: int, rebuild: bool
) -> None:
    assert should_rebuild(present, adding) is rebuild


def test_chunks_cover_the_range_exactly() -> None:
    assert chunks(5, 12, 3) == [(5, 8), (8, 11), (11, 12)]
    assert chunks(5, 5, 3) == []


def test_day_spans_cut_a_range_at_utc_midnights() -> None:
    start = 10 * DAY + 3600
    assert day_spans(start, 12 * DAY + 60) == [
        (10 * DAY, start, 11 * DAY),
        (11 * DAY, 11 * DAY, 12 * DAY),
        (12 * DAY, 12 * DAY, 12 * DAY + 60),
    ]
    assert len(day_spans(1_796_233_533 - 35 * DAY, 1_796_233_533)) == 36


def test_spread_is_proportional_and_exact() -> None:
    assert spread(10, [1, 1, 2]) == [3, 2, 5]
    parts = spread(100_000_000, [82_800, *[DAY] * 34, 3_600])
    assert sum(parts) == 100_000_000
    assert max(parts) - min(parts[1:-1]) <= 1
    assert spread(5, [0, 0]) == [0, 0]


def test_days_already_partitioned_are_left_alone() -> None:
    bounds = [f"FOR VALUES FROM ('{DAY}') TO ('{2 * DAY}')", "DEFAULT"]
    assert uncovered_days([0, DAY, 2 * DAY], bounds) == [0, 2 * DAY]


def test_partitions_are_named_like_the_aggregators() -> None:
    assert partition_name(1_700_006_400) == "meter_events_20231115"
    for day in (1_700_006_400, 1_796_169_600):
        assert partition_name(day) == aggregator_partition_name(day)


PKEY = IndexDefinition(
    "event_identifiers_pkey",
    "btree",
    "CREATE UNIQUE INDEX event_identifiers_pkey ON public.event_identifiers USING btree (digest)",
    "event_identifiers_pkey",
    "PRIMARY KEY (digest)",
)
BRIN = IndexDefinition(
    "event_identifiers_age",
    "brin",
    "CREATE INDEX event_identifiers_age ON public.event_identifiers USING brin (received_ms)",
    None,
    None,
)
WINDOW = IndexDefinition(
    "meter_events_window",
    "btree",
    "CREATE INDEX meter_events_window ON ONLY public.meter_events USING btree "
    "(series_id, event_ts)",
    None,
    None,
)


def test_a_constraint_is_dropped_and_added_back_as_a_constraint() -> None:
    assert drop_statement("event_identifiers", PKEY) == (
        'ALTER TABLE "event_identifiers" DROP CONSTRAINT "event_identifiers_pkey"'
    )
    assert create_statements("event_identifiers", PKEY, 70) == [
        'ALTER TABLE "event_identifiers" ADD CONSTRAINT "event_identifiers_pkey" '
        "PRIMARY KEY (digest) WITH (fillfactor = 70)",
        'ALTER INDEX "event_identifiers_pkey" RESET (fillfactor)',
    ]
    assert create_statements("event_identifiers", PKEY, None) == [
        'ALTER TABLE "event_identifiers" ADD CONSTRAINT "event_identifiers_pkey" '
        "PRIMARY KEY (digest)"
    ]


def test_only_btrees_are_packed_loosely() -> None:
    assert drop_statement("event_identifiers", BRIN) == 'DROP INDEX "event_identifiers_age"'
    assert create_statements("event_identifiers", BRIN, 70) == [BRIN.index_def]


def test_a_partitioned_index_is_rebuilt_on_every_partition() -> None:
    (statement,) = create_statements("meter_events", WINDOW, None)
    assert statement == (
        "CREATE INDEX meter_events_window ON public.meter_events USING btree (series_id, event_ts)"
    )


def test_a_step_needs_room_for_its_rows_the_load_and_a_reserve() -> None:
    assert disk_needed(0, 0) == 0
    needed = disk_needed(40_000_000, 80_000_000)
    # 20.2 GB of rows (125 and 190 bytes each), 6 GiB for the load, a 4 GiB reserve.
    assert 30e9 < needed < 32e9
    assert needed > disk_needed(40_000_000, 0) > RESERVE_BYTES
