"""The bench's Kafka ceiling: ProducerPerformance's summary line, its command, and its rows."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from loadtest.bench.producer_performance import (
    PRODUCER_PERFORMANCE,
    PerfSummary,
    PerfTarget,
    has_producer_performance,
    parse_summary,
    producer_argv,
)
from loadtest.bench.tables import benchmarks_markdown, result_rows

# Kafka 4.2.1's output for 300,000 records of 330 bytes, progress lines first.
OUTPUT = """\
Option --producer-props has been deprecated and will be removed in a future version.
206905 records sent, 206286.1 records/sec (64.92 MB/sec), 11.3 ms avg latency, 270.0 ms max latency.
300000 records sent, 129143.349118 records/sec (40.64 MB/sec), 538.45 ms avg latency, \
864.00 ms max latency, 517 ms 50th, 796 ms 95th, 828 ms 99th, 846 ms 99.9th.
"""
EXPECTED = PerfSummary(
    records=300_000,
    records_per_s=129143.349118,
    mib_per_s=40.64,
    avg_latency_ms=538.45,
    max_latency_ms=864.0,
    p50_ms=517,
    p95_ms=796,
    p99_ms=828,
    p999_ms=846,
)


def test_the_closing_line_is_parsed_and_progress_lines_are_not() -> None:
    assert parse_summary(OUTPUT) == EXPECTED


def test_a_run_cut_short_has_no_summary() -> None:
    progress = OUTPUT.splitlines()[1]
    assert parse_summary(progress + "\n") is None
    assert parse_summary("") is None


@pytest.mark.parametrize("line_end", ["\n", "\r\n", ""])
def test_line_endings_do_not_matter(line_end: str) -> None:
    closing = OUTPUT.splitlines()[2]
    assert parse_summary(closing + line_end) == EXPECTED


def test_a_warm_up_runs_steady_state_line_is_read_apart_from_the_whole_runs() -> None:
    steady = (
        "200000 steady state records sent, 150000.5 records/sec (47.20 MB/sec), 20.00 ms avg "
        "latency, 90.00 ms max latency, 15 ms 50th, 40 ms 95th, 60 ms 99th, 80 ms 99.9th.\n"
    )
    output = "Warmup first 100000 records.\nIn steady state.\n" + OUTPUT + steady
    assert parse_summary(output) == EXPECTED
    assert parse_summary(output, steady_state=True) == PerfSummary(
        records=200_000,
        records_per_s=150000.5,
        mib_per_s=47.2,
        avg_latency_ms=20.0,
        max_latency_ms=90.0,
        p50_ms=15,
        p95_ms=40,
        p99_ms=60,
        p999_ms=80,
    )
    assert parse_summary(OUTPUT, steady_state=True) is None


def test_the_command_carries_ingests_producer_settings() -> None:
    argv = producer_argv(
        PerfTarget("java", "/c/kafka/*:/c/tools/*", "127.0.0.1:9092", "t", 330), 5000
    )
    main = argv.index(PRODUCER_PERFORMANCE)
    assert argv[main - 2 : main] == ["-cp", "/c/kafka/*:/c/tools/*"]
    options = argv[main + 1 :]
    assert options[:8] == [
        "--topic", "t", "--num-records", "5000", "--record-size", "330", "--throughput", "-1",
    ]  # fmt: skip
    assert "--warmup-records" not in options
    properties = options[options.index("--producer-props") + 1 :]
    assert properties == [
        "bootstrap.servers=127.0.0.1:9092",
        "acks=all",
        "enable.idempotence=true",
        "linger.ms=5",
        "batch.size=131072",
        "compression.type=none",
    ]


def test_warm_up_records_are_part_of_the_count() -> None:
    argv = producer_argv(PerfTarget("java", "cp", "b:1", "t", 330), 5000, warmup_records=1000)
    assert argv[argv.index("--num-records") + 1] == "5000"
    assert argv[argv.index("--warmup-records") + 1] == "1000"


def test_the_class_is_found_only_in_a_jar_that_holds_it(tmp_path: Path) -> None:
    (tmp_path / "broken.jar").write_bytes(b"not a zip")
    with zipfile.ZipFile(tmp_path / "clients.jar", "w") as jar:
        jar.writestr("org/apache/kafka/clients/Producer.class", b"")
    assert not has_producer_performance(tmp_path)
    with zipfile.ZipFile(tmp_path / "tools.jar", "w") as jar:
        jar.writestr("org/apache/kafka/tools/ProducerPerformance.class", b"")
    assert has_producer_performance(tmp_path)


LOOP = {
    "tool": "aiokafka produce loop with ingest's producer settings (acks=all)",
    "records": 100_000,
    "records_per_s": 60_000.0,
    "mb_per_s": 19.8,
}


def _results(kafka_single: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": "make bench",
        "argv": ".venv/bin/python -m loadtest.bench",
        "duration_s": 300.0,
        "results_dir": "build/bench/x",
        "notes": "",
        "machine": {
            "nproc": 2,
            "cpu_model": "x",
            "ram_gib": 1,
            "kernel": "6.1",
            "python": "3.11.7",
            "date": "d",
            "git_rev": "r",
            "loadavg_before": [0.5],
            "loadavg_after": [1.5],
        },
        "phases": {
            "v2": {
                "load": {"requests_per_s": 3000.0, "latency_ms": {"p50": 1, "p95": 2, "p99": 3}}
            },
            "kafka_ceiling_single": kafka_single,
        },
    }


def test_producer_performance_is_the_ceiling_and_the_loop_is_measured_against_it() -> None:
    single = {
        "tool": "Kafka 4.2.1's ProducerPerformance",
        "source": "ProducerPerformance",
        "records": 2_000_000,
        "records_per_s": 600_000.0,
        "mb_per_s": 198.0,
        "latency_ms": {"avg": 9.5, "p50": 5, "p95": 30, "p99": 45, "p99_9": 70, "max": 81.0},
        "seconds": 3.33,
        "record_bytes": 330,
        "aiokafka": LOOP,
    }
    rows = result_rows(_results(single))
    (v2,) = [row for row in rows if row[0].startswith("v2 single")]
    assert v2[3] == "generator n/a req/s; Kafka 600,000 records/s"
    assert v2[4].endswith("0.5 % of Kafka")
    ceiling, loop = [row for row in rows if "single-event records" in row[0]]
    assert ceiling == (
        "Kafka ceiling, single-event records (330 bytes, acks=all)",
        "600,000 records/s (198.0 MB/s)<br>Kafka's ProducerPerformance",
        "5 / 30 / 45 ms (max 81)",
        "-",
        "-",
    )
    assert loop[1:] == ("60,000 records/s (19.8 MB/s)", "-", "Kafka 600,000 records/s", "10.0 %")
    text = benchmarks_markdown(_results(single))
    assert (
        "- Kafka, single-event records: 600,000 records/s of 330 bytes (198.0 MB/s) with "
        "acks=all, latency avg 9.5 / p50 5 / p99 45 / p99.9 70 / max 81 ms (2,000,000 records "
        "in 3.3 s); Kafka 4.2.1's "
        "ProducerPerformance. Beside it, an aiokafka produce loop with ingest's producer "
        "settings (acks=all): 60,000 records/s (19.8 MB/s), 10.0 % of it."
    ) in text


def test_without_producer_performance_the_loop_is_the_ceiling_and_says_why() -> None:
    single = {
        **LOOP,
        "source": "aiokafka",
        "record_bytes": 330,
        "producer_performance_error": "java is not on PATH;\nKafka needs Java 17+",
    }
    rows = result_rows(_results(single))
    (v2,) = [row for row in rows if row[0].startswith("v2 single")]
    assert v2[3].endswith("Kafka 60,000 records/s")
    (ceiling,) = [row for row in rows if "single-event records" in row[0]]
    assert ceiling[1:3] == (
        "60,000 records/s (19.8 MB/s)<br>aiokafka produce loop (Kafka's ProducerPerformance "
        "did not run)",
        "-",
    )
    text = benchmarks_markdown(_results(single))
    assert (
        "(19.8 MB/s) with acks=all; aiokafka produce loop with ingest's producer settings "
        "(acks=all). Kafka's ProducerPerformance did not run: java is not on PATH; Kafka needs "
        "Java 17+."
    ) in text
