"""Kafka's own producer benchmark, ``kafka-producer-perf-test`` (the class
``org.apache.kafka.tools.ProducerPerformance``), run from the cached jars for the Kafka ceiling.

The kafka-tools jar is fetched on its own (:func:`deploy.kafka_jars.ensure_kafka_tools_jars`) and
runs with the broker's jars beside it. The tool stops after a record count, not a time, so one
measurement is two runs: a short one whose rate sizes the second to last about the time asked
for, capped in bytes. Each run first sends :data:`WARMUP_BYTES` of records that its figures leave
out (``--warmup-records``, where the tool has it): a fresh JVM's producer needs about a second
before it runs at full speed, which would otherwise dominate runs of a few seconds. The second
run's closing line is the result.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.kafka_jars import ensure_kafka_jars, ensure_kafka_tools_jars, output_tail
from meterflow.errors import LauncherError, MeterflowError
from meterflow.kafka.producer import REQUEST_LINGER_MS, REQUEST_MAX_BATCH_BYTES

PRODUCER_PERFORMANCE = "org.apache.kafka.tools.ProducerPerformance"
WARMUP_BYTES = 64 * 1024 * 1024  # about the first second of a fresh JVM's producer
CALIBRATION_BYTES = 32 * 1024 * 1024
MAX_BYTES = 1024 * 1024 * 1024
_HELP_TIMEOUT_S = 30.0
_CALIBRATION_TIMEOUT_S = 60.0
# The whole run's closing line; progress lines (every 5 s) have no percentiles. A run with
# --warmup-records adds a " steady state" line, told apart by that group.
_SUMMARY = re.compile(
    r"^(?P<records>\d+)(?P<steady> steady state)? records sent, "
    r"(?P<rate>[\d.]+) records/sec \((?P<mib>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, "
    r"(?P<p50>\d+) ms 50th, (?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th, "
    r"(?P<p999>\d+) ms 99\.9th\.\s*$",
    re.MULTILINE,
)


class ProducerPerformanceFailed(MeterflowError):
    """ProducerPerformance exited with an error, ran out of time, or printed no summary."""


@dataclass(frozen=True, slots=True)
class PerfSummary:
    """One run's closing line; latencies run from send() to the acknowledgement."""

    records: int
    records_per_s: float
    mib_per_s: float  # the tool's "MB/sec" counts 2**20 bytes
    avg_latency_ms: float
    max_latency_ms: float
    p50_ms: int
    p95_ms: int
    p99_ms: int
    p999_ms: int

    def latency_ms(self) -> dict[str, float]:
        return {
            "avg": self.avg_latency_ms,
            "p50": self.p50_ms,
            "p95": self.p95_ms,
            "p99": self.p99_ms,
            "p99_9": self.p999_ms,
            "max": self.max_latency_ms,
        }


@dataclass(frozen=True, slots=True)
class PerfRun:
    whole: PerfSummary
    steady: PerfSummary | None  # the records after the warm-up, when there was one

    @property
    def result(self) -> PerfSummary:
        return self.whole if self.steady is None else self.steady


def parse_summary(output: str, *, steady_state: bool = False) -> PerfSummary | None:
    """The last summary line of the whole run in ProducerPerformance's output (or, with
    ``steady_state``, of the records after ``--warmup-records``); None if there is none (the run
    was cut short, or failed). Progress lines are never summaries."""
    found = [m for m in _SUMMARY.finditer(output) if bool(m["steady"]) == steady_state]
    if not found:
        return None
    last = found[-1]
    return PerfSummary(
        records=int(last["records"]),
        records_per_s=float(last["rate"]),
        mib_per_s=float(last["mib"]),
        avg_latency_ms=float(last["avg"]),
        max_latency_ms=float(last["max"]),
        p50_ms=int(last["p50"]),
        p95_ms=int(last["p95"]),
        p99_ms=int(last["p99"]),
        p999_ms=int(last["p999"]),
    )


def producer_properties() -> dict[str, str]:
    """Ingest's producer settings (see :func:`meterflow.kafka.producer.idempotent_producer`)."""
    return {
        "acks": "all",
        "enable.idempotence": "true",
        "linger.ms": str(REQUEST_LINGER_MS),
        "batch.size": str(REQUEST_MAX_BATCH_BYTES),
        "compression.type": "none",
    }


@dataclass(frozen=True, slots=True)
class PerfTarget:
    """Where and what ProducerPerformance sends: the Java and classpath that run it, the broker,
    the topic, and the size of each record."""

    java: str
    classpath: str
    bootstrap: str
    topic: str
    record_size: int


def producer_argv(target: PerfTarget, records: int, warmup_records: int = 0) -> list[str]:
    """``records`` in all, the first ``warmup_records`` of them left out of the steady-state
    summary (no ``--warmup-records`` option when 0)."""
    properties = {"bootstrap.servers": target.bootstrap, **producer_properties()}
    warmup = ["--warmup-records", str(warmup_records)] if warmup_records else []
    return [
        target.java,
        "-Xmx256m",
        # The summary's decimals are formatted in the default locale; the parser reads "1.5".
        "-Duser.language=en",
        "-Duser.country=US",
        "-cp",
        target.classpath,
        PRODUCER_PERFORMANCE,
        "--topic", target.topic,
        "--num-records", str(records),
        "--record-size", str(target.record_size),
        "--throughput", "-1",
        *warmup,
        # Deprecated in 4.2 for --command-property, which 4.0 lacks; every 4.x reads this one.
        "--producer-props", *(f"{key}={value}" for key, value in properties.items()),
    ]  # fmt: skip


def has_producer_performance(libs: Path) -> bool:
    """Whether a jar in ``libs`` holds Kafka's producer benchmark class."""
    member = PRODUCER_PERFORMANCE.replace(".", "/") + ".class"
    for jar in sorted(libs.glob("*.jar")):
        try:
            with zipfile.ZipFile(jar) as archive:
                if member in archive.namelist():
                    return True
        except (OSError, zipfile.BadZipFile):
            continue
    return False


def producer_performance_classpath(version: str, cache_dir: Path) -> str:
    """The broker's jars and kafka-tools for Kafka ``version``, fetched into ``cache_dir`` unless
    cached; raises :class:`LauncherError` when they cannot be had."""
    broker = ensure_kafka_jars(version, cache_dir)
    tools = ensure_kafka_tools_jars(version, cache_dir)
    if not has_producer_performance(tools):
        raise LauncherError(f"no jar in {tools} holds {PRODUCER_PERFORMANCE}")
    return f"{broker}/*:{tools}/*"


def java_executable() -> str:
    java = shutil.which("java")
    if java is None:
        raise LauncherError("java is not on PATH; Kafka's ProducerPerformance needs Java 17+")
    return java


def has_warmup_option(java: str, classpath: str) -> bool:
    """Whether this ProducerPerformance takes ``--warmup-records`` (newer 4.x releases do)."""
    argv = [java, "-cp", classpath, PRODUCER_PERFORMANCE, "--help"]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=_HELP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return "--warmup-records" in done.stdout


def run_producer_performance(
    target: PerfTarget, records: int, *, warmup_records: int, timeout_s: float
) -> PerfRun:
    argv = producer_argv(target, records, warmup_records)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ProducerPerformanceFailed(
            f"{records:,} records of {target.record_size} bytes took over {timeout_s:.0f} s"
        ) from exc
    whole = parse_summary(done.stdout)
    steady = parse_summary(done.stdout, steady_state=True) if warmup_records else None
    if done.returncode != 0 or whole is None or (warmup_records and steady is None):
        raise ProducerPerformanceFailed(
            f"exit {done.returncode}, no summary: " + output_tail(done.stdout + done.stderr, 5)
        )
    return PerfRun(whole, steady)


def measure_producer_performance(
    classpath: str, bootstrap: str, topic: str, *, record_size: int, duration_s: float
) -> dict[str, Any]:
    """A calibration run of :data:`CALIBRATION_BYTES`, then a run sized to last about
    ``duration_s`` at that rate (at most :data:`MAX_BYTES`), each after its warm-up; the second
    run's figures without its warm-up."""
    java = java_executable()
    target = PerfTarget(java, classpath, bootstrap, topic, record_size)
    warmup = max(1000, WARMUP_BYTES // record_size) if has_warmup_option(java, classpath) else 0
    calibration_records = max(1000, CALIBRATION_BYTES // record_size)
    calibration = run_producer_performance(
        target,
        warmup + calibration_records,
        warmup_records=warmup,
        timeout_s=_CALIBRATION_TIMEOUT_S,
    ).result
    records = int(calibration.records_per_s * duration_s)
    records = min(max(records, calibration_records), MAX_BYTES // record_size)
    run = run_producer_performance(
        target, warmup + records, warmup_records=warmup, timeout_s=3 * duration_s + 30.0
    )
    summary = run.result
    return {
        "records": summary.records,
        "records_per_s": round(summary.records_per_s, 1),
        "mb_per_s": round(summary.records_per_s * record_size / 1e6, 2),
        "latency_ms": summary.latency_ms(),
        "seconds": round(summary.records / summary.records_per_s, 2),
        "warmup_records": warmup,
        "whole_run_records_per_s": round(run.whole.records_per_s, 1),
        "calibration_records_per_s": round(calibration.records_per_s, 1),
    }
