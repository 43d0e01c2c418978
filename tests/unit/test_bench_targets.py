"""BENCHMARKS.md's scale targets: each judged from the suite's own figures, or marked as not
measured when the suite did not run it."""

from __future__ import annotations

from typing import Any

from loadtest.bench.targets import target_rows


def _phases() -> dict[str, Any]:
    return {
        "postgres_copy_ceiling": {"rows_per_s": 200_000.0},
        "fold_raw": {"events_per_s": 56_000.0},
        "fold_overwrite": {"events_per_s": 125_000.0},
        "noop_stream": {"load": {"events_per_s": 700_000.0}},
        "stream": {"available": True, "load": {"accepted_events_per_s": 45_000.0}},
        "stream_ingest": {
            "available": True,
            "ingest_processes": 2,
            "load": {"accepted_events_per_s": 60_000.0},
        },
        "storage": {
            "groups": {
                "dedupe set": {"bytes_per_event": 108.7},
                "raw events": {"bytes_per_event": 170.2},
                "rollups": {"bytes_per_event": 15.8},
                "transient": {"bytes_per_event": 2.5},
            }
        },
        "kafka_ceiling_single": {
            "records_per_s": 590_000.0,
            "record_bytes": 330,
            "tool": "Kafka's ProducerPerformance",
        },
    }


def _by_name(phases: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {
        what: (target, figure, verdict) for what, target, figure, verdict in target_rows(phases)
    }


def test_each_target_judged_from_this_runs_figures() -> None:
    rows = _by_name(_phases())
    raw = rows["Fold alone, raw meters, one aggregator"]
    assert raw == ("100,000 events/s", "56,000 events/s (28.0 % of this run's PostgreSQL COPY "
                   "ceiling)", "not met")  # fmt: skip
    assert rows["Fold alone, overwrite-heavy hour meters, one aggregator"][2] == "met"
    stream = rows["Most accepted through `meter_event_stream`"]
    assert stream[1] == "60,000 events/s (2 ingest processes); the generator alone reaches 700,000"
    assert stream[2] == "not met"
    storage = rows["Storage"]
    assert storage[1] == "297.2 bytes per event (48 % of before)"
    assert storage[2] == "met"
    assert rows["Kafka ceiling row"][2] == "met"


def test_targets_the_run_did_not_measure_say_so() -> None:
    rows = _by_name({})
    assert {verdict for _, _, verdict in rows.values()} == {"not measured"}
    preload = rows["Flat cost as stored data grows"]
    assert "--preload" in preload[1]
    assert "make soak" in rows["Sustained stream"][1]


def test_the_flat_cost_target_reads_the_largest_preload_step() -> None:
    phases = {
        "fold_preload": {
            "steps": [
                {"identifiers": 0, "ratio_to_empty": 1.0},
                {"identifiers": 10_000_000, "ratio_to_empty": 0.95},
                {"identifiers": 50_000_000, "ratio_to_empty": 0.79, "warm_ratio": 0.9},
            ]
        }
    }
    preload = _by_name(phases)["Flat cost as stored data grows"]
    assert preload[1:] == ("0.79 right after the load, 0.90 with hot indexes", "not met")
    phases["fold_preload"]["steps"][2]["ratio_to_empty"] = 1.04
    assert _by_name(phases)["Flat cost as stored data grows"][2] == "met"


def test_a_kafka_ceiling_from_another_tool_does_not_count() -> None:
    phases = _phases()
    phases["kafka_ceiling_single"]["tool"] = "an aiokafka loop"
    assert _by_name(phases)["Kafka ceiling row"][2] == "not met"
