"""Reports of the load generator and the benchmark suite's BENCHMARKS.md writer (pure)."""

from __future__ import annotations

from typing import Any

from loadtest.bench.tables import STREAM_INGEST_PHASE, benchmarks_markdown, result_rows
from loadtest.outcomes import Tally, WorkerResult
from loadtest.plan import AccountPlan, Bounds, LoadConfig, MeterPlan, RunSetup, customer_id
from loadtest.report import format_load_report, load_report
from loadtest.verify import plan_checks, summary_range
from meterflow.windows import DAY_S

SETUP = RunSetup(
    "r1",
    "http://127.0.0.1:9",
    (AccountPlan("a0", "sk_test_0", (MeterPlan("ev0", "count", None, "mtr_0"),)),),
    customers=20,
)


def worker(
    outcomes: dict[str, int], requests: int, started: float, finished: float
) -> WorkerResult:
    tally = Tally(requests=requests, events=requests, outcomes=dict(outcomes))
    tally.statuses["200"] = requests
    for n in range(requests):
        tally.latency.record(1000 + n)
    return WorkerResult(0, tally, None, set(), [], started, finished)


def test_load_report_adds_up_workers_and_names_problems() -> None:
    config = LoadConfig(bounds=Bounds(duration_s=2.0), workers=2)
    results = [
        worker({"accepted": 90, "unresolved": 1}, 100, 10.0, 12.0),
        worker({"accepted": 100}, 100, 10.0, 12.0),
    ]
    report = load_report(config, SETUP, results, [], "v2")
    assert report["requests"] == 200
    assert report["requests_per_s"] == 100.0
    assert report["accepted_events_per_s"] == 95.0
    assert report["problems"] == {"unresolved": 1}
    assert report["latency_ms"]["max"] == 1.099
    text = format_load_report(report)
    assert "100 req/s" in text
    assert "PROBLEMS: unresolved 1" in text


def test_checks_cover_every_customer_and_sample_windows() -> None:
    unresolved = {(0, "ev0", customer_id("r1", 3))}
    checks, skipped = plan_checks(SETUP, unresolved, window_sample=5)
    whole = [c for c in checks if c.window is None and not c.ranged]
    windows = [c for c in checks if c.window is not None]
    # A raw count series with an unresolved event: its whole range, within bounds, and no more.
    assert [c.series for c in checks if c.ranged] == sorted(unresolved)
    assert skipped == 0
    assert len(whole) == 19
    assert len(windows) == 2 * 5
    assert all(c.series not in unresolved for c in whole + windows)


def test_series_with_unresolved_events_of_order_sensitive_meters_are_left_out() -> None:
    meters = (MeterPlan("ev0", "last", None, "mtr_0"), MeterPlan("ev1", "sum", "hour", "mtr_1"))
    setup = RunSetup("r1", "http://127.0.0.1:9", (AccountPlan("a0", "sk", meters),), customers=4)
    unresolved = {(0, "ev0", customer_id("r1", 1)), (0, "ev1", customer_id("r1", 2))}
    checks, skipped = plan_checks(setup, unresolved, window_sample=0)
    assert skipped == 2
    assert len(checks) == 2 * 4 - 2
    assert not any(c.ranged or c.series in unresolved for c in checks)


def test_summary_range_is_day_aligned_and_covers_35_days_back() -> None:
    start, end = summary_range(1_717_250_000.5)
    assert start % DAY_S == 0
    assert end % DAY_S == 0
    assert start <= 1_717_250_000 - 35 * DAY_S
    assert end > 1_717_250_000


def load(rps: float) -> dict[str, Any]:
    return {
        "requests_per_s": rps,
        "accepted_events_per_s": rps,
        "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0, "mean": 1.5},
        "timeline": [],
    }


def results(stream: dict[str, Any]) -> dict[str, Any]:
    verification = {"ok": True, "lost": 0, "doubled": 0, "matched": 8, "checks": 8}
    return {
        "command": "make bench",
        "argv": ".venv/bin/python -m loadtest.bench",
        "duration_s": 300.0,
        "results_dir": "build/bench/x",
        "notes": "Rate limits off.",
        "rss_note": "VmHWM.",
        "machine": {
            "nproc": 2,
            "cpu_model": "AMD EPYC",
            "ram_gib": 23.5,
            "kernel": "6.1",
            "python": "3.11.7",
            "date": "2026-11-21 02:00 UTC",
            "git_rev": "abc1234",
            "loadavg_before": [0.5, 0.4, 0.3],
            "loadavg_after": [1.5, 0.9, 0.5],
        },
        "phases": {
            "noop": {"load": load(40_000)},
            "v2": {"load": load(2_000), "verification": verification},
            "stream": stream,
            "kafka_ceiling_single": {
                "records_per_s": 10_000.0,
                "record_bytes": 330,
                "mb_per_s": 3.3,
                "tool": "aiokafka",
            },
        },
        "peak_rss_mib": {"ingest": 50.0, "Kafka": None},
    }


def test_markdown_states_machine_ratios_and_a_missing_stream() -> None:
    missing = {"available": False, "reason": "stream endpoint not available: 404"}
    text = benchmarks_markdown(results(missing))
    assert "| 2 | AMD EPYC | 23.5 GiB | 6.1 | 3.11.7 |" in text
    assert "0.50 / 1.50" in text
    assert "| v2 single events (max rate) | 2,000 req/s<br>ok: lost 0, doubled 0" in text
    assert "5.0 % of generator; 20.0 % of Kafka" in text
    assert "not available (stream endpoint not available: 404)" in text
    assert "| 50 MiB | n/a |" in text
    assert text.endswith("\n")


def test_an_available_stream_is_a_row_in_events_per_second() -> None:
    rows = result_rows(results({"available": True, "load": load(15_000)}))
    (stream,) = [row for row in rows if row[0].startswith("v2 stream")]
    assert stream[1].startswith("15,000 events/s")
    assert stream[2] == "1.0 / 2.0 / 3.0 ms"


def test_the_stream_with_several_ingest_processes_is_a_row_of_its_own() -> None:
    doc = results({"available": True, "load": load(15_000)})
    doc["phases"][STREAM_INGEST_PHASE] = {
        "available": True,
        "load": load(21_000),
        "ingest_processes": 2,
    }
    rows = [row for row in result_rows(doc) if row[0].startswith("v2 stream")]
    assert [row[0] for row in rows] == [
        "v2 stream, batch 100 (max rate)",
        "v2 stream, batch 100 (max rate), 2 ingest processes on one port",
    ]
    assert rows[1][1].startswith("21,000 events/s")


def test_alert_latency_row_names_probes_background_and_percentiles() -> None:
    data = results({"available": True, "load": load(15_000)})
    data["phases"]["alerts"] = {
        "probes": 120,
        "notified": 119,
        "missing": 1,
        "latency_ms": {"p50": 40.0, "p95": 90.0, "p99": 180.4, "max": 250.0, "mean": 50.0},
        "background": {"accepted_events_per_s": 19_800.0, "target_rate": 20_000.0},
    }
    (row,) = [r for r in result_rows(data) if r[0].startswith("Alert notification")]
    assert row[1] == (
        "119/120 probes notified, 1 missing, under 19,800 events/s of stream background load "
        "(target 20,000)"
    )
    assert row[2] == "40 / 90 / 180 ms (max 250)"


def test_credit_alert_latency_row_follows_the_alert_row() -> None:
    data = results({"available": True, "load": load(15_000)})
    for phase, notified in (("alerts", 120), ("credit_alerts", 300)):
        data["phases"][phase] = {
            "probes": notified,
            "notified": notified,
            "missing": 0,
            "fired_before_crossing": 0,
            "latency_ms": {"p50": 61.2, "p95": 98.0, "p99": 140.6, "max": 170.0, "mean": 66.0},
            "background": {"accepted_events_per_s": 19_900.0, "target_rate": 20_000.0},
        }
    names = [r[0] for r in result_rows(data)]
    credit = names.index(
        "Credit balance alert: crossing event accepted → billing.alert.triggered on the topic"
    )
    assert names[credit - 1].startswith("Alert notification")
    row = result_rows(data)[credit]
    assert row[1] == (
        "300/300 probes notified, 0 missing, 0 fired early, under 19,900 events/s of stream "
        "background load (target 20,000)"
    )
    assert row[2] == "61 / 98 / 141 ms (max 170)"
