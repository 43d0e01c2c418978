"""The storage phase's arithmetic and its rows, the fold rows with several aggregators and after
a preload, and the fold workload's records."""

from __future__ import annotations

import re
from typing import Any

from loadtest.bench.fold_rate import FoldWorkload, build_records, record_slices
from loadtest.bench.pg_io import IoCounters, per_event
from loadtest.bench.storage import GROUPS, ROLLUPS, TableSize, compacted, growth, measured_bytes
from loadtest.bench.tables import result_rows
from meterflow.records.meter_events import EventsRecord, decode

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _sizes(scale: int) -> dict[str, TableSize]:
    sizes = {table: TableSize(0, 0, {}) for tables in GROUPS.values() for table in tables}
    sizes["event_identifiers"] = TableSize(
        100 * scale,
        15_000 * scale,
        {"event_identifiers_pkey": 7_000 * scale, "event_identifiers_age": 24_576},
    )
    sizes["meter_events"] = TableSize(
        100 * scale, 20_000 * scale, {"meter_events_window": 9_000 * scale}
    )
    sizes["rollups_minute"] = TableSize(
        10 * scale, 1_200 * scale, {"rollups_minute_pkey": 800 * scale}
    )
    sizes["rollups_hour"] = TableSize(2 * scale, 300 * scale, {"rollups_hour_pkey": 100 * scale})
    sizes["rollups_day"] = TableSize(scale, 150 * scale, {"rollups_day_pkey": 50 * scale})
    sizes["usage_changes"] = TableSize(5 * scale, 500 * scale, {"usage_changes_pkey": 100 * scale})
    return sizes


def _storage_phase() -> dict[str, Any]:
    grown = growth(_sizes(1), _sizes(3), accepted=200)
    return {
        "accepted_events": 200,
        "accounts": 2,
        "meters_per_account": 4,
        "customers_per_account": 500,
        "events_per_series_minute": 0.5,
        "wal_bytes": 200_000,
        "wal_bytes_per_event": 1000.0,
        "fold_events_per_s": 20_000.0,
        **grown,
        # Rewritten without their dead versions: smaller than the growth measured.
        "rollups_compacted": compacted(
            {t: TableSize(_sizes(3)[t].rows, _sizes(3)[t].total // 2, {}) for t in ROLLUPS}
        ),
    }


def test_growth_is_the_difference_per_table_and_group() -> None:
    phase = _storage_phase()
    tables = phase["tables"]
    identifiers = tables["event_identifiers"]
    assert identifiers["rows"] == 200
    assert identifiers["index_bytes"] == {
        "event_identifiers_pkey": 14_000,
        "event_identifiers_age": 0,
    }
    assert identifiers["bytes_per_event"] == (30_000 + 14_000) / 200
    assert tables["window_survivors"]["bytes_per_row"] is None
    groups = phase["groups"]
    assert groups["rollups"]["total_bytes"] == 2 * (2000 + 400 + 200)


def test_sizing_reads_bytes_per_event_and_per_rollup_row() -> None:
    m = measured_bytes(_storage_phase())
    assert m.dedupe_per_event == 220.0
    assert m.dedupe_btree_per_event == 70.0
    assert m.raw_per_event == 290.0
    assert m.minute_row == 100.0  # (3,600 + 2,400) / 2 bytes / 30 rows, compacted
    assert m.hour_row == 100.0
    assert m.day_row == 100.0
    assert _storage_phase()["rollups_compacted"]["window_survivors"]["bytes_per_row"] is None
    assert m.wal_per_event == 1000.0


def test_storage_rows_name_each_group_and_the_wal() -> None:
    rows = result_rows({"phases": {"storage": _storage_phase()}})
    names = [row[0] for row in rows]
    assert names == [
        "Storage per accepted event: the dedupe set (event_identifiers)",
        "Storage per accepted event: raw events (meter_events, all partitions)",
        "Storage per accepted event: rollups (minute, hour, day, window survivors)",
        "Storage per accepted event: transient rows (usage_changes)",
        "WAL written per accepted event (the fold's transactions)",
    ]
    assert rows[0][1].startswith("220.0 bytes/event")
    assert "200 events accepted, 2 accounts x 4 meters x 500 customers" in rows[0][1]


def _fold(rate: float, aggregators: int = 1) -> dict[str, object]:
    return {
        "finished": True,
        "aggregators": aggregators,
        "events_per_s": rate,
        "events_per_s_after_first_fold": rate * 1.1,
        "events": 200_000,
        "records": 24_000,
        "rollup_event_count": 200_000,
        "expected_rollup_event_count": 200_000,
    }


def test_a_fold_row_per_process_count_compared_with_one_process() -> None:
    phases = {
        "fold_raw": _fold(20_000),
        "fold_raw_2_aggregators": _fold(30_000, 2),
        "fold_overwrite": _fold(25_000),
        "postgres_copy_ceiling": {"rows_per_s": 200_000},
    }
    rows = result_rows({"phases": phases})
    assert [r[0] for r in rows] == [
        "Aggregator fold, raw meters",
        "Aggregator fold, raw meters, 2 aggregator processes in one group",
        "Aggregator fold, hour meters, overwrite-heavy",
    ]
    assert rows[1][3] == "one aggregator process: 20,000 events/s; PostgreSQL COPY 200,000 rows/s"
    assert rows[1][4] == "1.50x one process; 15.0 % of COPY"


def test_preload_rows_compare_with_the_empty_database() -> None:
    step = {
        "identifiers": 10_000_000,
        "raw_events": 20_000_000,
        "load": {"added_identifiers": 10_000_000, "added_raw_events": 20_000_000, "seconds": 95.0},
        "fold": _fold(15_000),
        "ratio_to_empty": 0.75,
        "warm_up": {"seconds": 12.4, "rows": 30_000_000},
        "fold_warm": _fold(19_000),
        "warm_ratio": 0.95,
    }
    phases = {"fold_preload": {"empty_events_per_s": 20_000.0, "steps": [step]}}
    cold, warm = result_rows({"phases": phases})
    assert cold[0] == (
        "Aggregator fold, raw meters, on 10,000,000 preloaded identifiers (48 h) and "
        "20,000,000 raw events (35 days), right after the load"
    )
    assert "this step's preload took 95 s<br>rollups match" in cold[1]
    assert cold[3] == "empty database: 20,000 events/s"
    assert cold[4] == "75.0 % of the empty database's rate"
    assert warm[0].endswith("(35 days), hot indexes in memory")
    assert warm[1].startswith("19,000 events/s")
    assert "read into memory in 12 s<br>rollups match" in warm[1]
    assert warm[4] == "95.0 % of the empty database's rate"


def test_preload_rows_name_what_postgresql_wrote_and_read_per_event() -> None:
    before = IoCounters(wal_records=10, wal_fpi=5, wal_bytes=1_000, blks_read=0, blks_hit=7)
    after = IoCounters(wal_records=60, wal_fpi=25, wal_bytes=401_000, blks_read=30, blks_hit=7)
    io = per_event(before, after, 100)
    assert io == {
        "wal_records": 0.5, "wal_fpi": 0.2, "wal_bytes": 4000.0, "blks_read": 0.3, "blks_hit": 0.0,
    }  # fmt: skip
    step = {
        "identifiers": 0,
        "raw_events": 0,
        "load": {},
        "fold": {**_fold(15_000), "database_per_event": io},
        "ratio_to_empty": 1.0,
    }
    phases = {"fold_preload": {"empty_events_per_s": 15_000.0, "steps": [step]}}
    (row,) = result_rows({"phases": phases})
    assert (
        "per event 4,000 B of WAL, 0.20 full-page images, 0.30 blocks read from outside shared "
        "buffers<br>rollups match" in row[1]
    )


WORKLOAD = FoldWorkload("w", "acct_x", (("mtr_a", "a"), ("mtr_b", "b")), 50, 1000, False)


def _identifiers(records: list[tuple[bytes, bytes]]) -> list[str]:
    ids: list[str] = []
    for _, value in records:
        record = decode(value)
        assert isinstance(record, EventsRecord)
        ids.extend(e.identifier for e in record.events)
    return ids


def test_identifiers_are_random_uuids_and_slices_do_not_repeat_them() -> None:
    whole = build_records(WORKLOAD, 1_700_000_000)
    assert whole.events == 1000
    ids = _identifiers(whole.records)
    assert len(ids) == len(set(ids)) == 1000
    assert all(UUID.match(i) for i in ids)
    assert _identifiers(build_records(WORKLOAD, 1_700_000_000).records) == ids
    sliced = list(record_slices([WORKLOAD], 1_700_000_000, 300))
    assert [s.events for s in sliced] == [300, 300, 300, 100]
    assert len({i for s in sliced for i in _identifiers(s.records)}) == 1000
