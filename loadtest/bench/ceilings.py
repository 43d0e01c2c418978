"""Ceilings on the same machine in the same run: what Kafka and PostgreSQL do with no meterflow.

* Kafka: records of a given size with ``acks=all``, through Kafka's own ``ProducerPerformance``
  when the cached jars have it, else a bare aiokafka loop with ingest's producer settings.
* PostgreSQL: ``COPY`` of rows shaped like ``meter_events`` into a scratch table with the same
  columns and index, in transactions of the aggregator's batch size.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from meterflow.kafka.producer import REQUEST_LINGER_MS, REQUEST_MAX_BATCH_BYTES, idempotent_producer
from meterflow.records.meter_events import partition_key

PRODUCER_PERFORMANCE = "org.apache.kafka.tools.ProducerPerformance"
_SCRATCH_TABLE = "bench_copy_ceiling"
_ACK_WINDOW = 20_000
_COPY_COLUMNS = (
    "account_id", "livemode", "meter_id", "customer", "identifier", "value", "event_ts",
    "received_ms", "receipt_batch", "receipt_index",
)  # fmt: skip
_PERF_SUMMARY = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)")


def find_producer_performance(libs: Path) -> bool:
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


def _java_producer_ceiling(
    libs: Path, bootstrap: str, topic: str, record_size: int, records: int
) -> dict[str, Any]:
    java = shutil.which("java") or "java"
    argv = [
        java, "-Xmx256m", "-cp", f"{libs}/*", PRODUCER_PERFORMANCE,
        "--topic", topic, "--num-records", str(records), "--record-size", str(record_size),
        "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all",
        "enable.idempotence=true", "linger.ms=5", "batch.size=131072", "compression.type=none",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    found = _PERF_SUMMARY.findall(done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"ProducerPerformance failed: {done.stderr[-500:]}")
    sent, rate, mb_s = found[-1]
    return {
        "tool": PRODUCER_PERFORMANCE,
        "records": int(sent),
        "records_per_s": round(float(rate), 1),
        "mb_per_s": float(mb_s),
    }


async def _aiokafka_producer_ceiling(
    bootstrap: str, topic: str, record_size: int, records: int, duration_s: float
) -> dict[str, Any]:
    producer = idempotent_producer(
        bootstrap,
        "meterflow-ingest",
        linger_ms=REQUEST_LINGER_MS,
        max_batch_bytes=REQUEST_MAX_BATCH_BYTES,
        request_timeout_s=30.0,
    )
    value = b"x" * record_size
    keys = [partition_key("acct_ceiling", False, f"cus_{n}") for n in range(1000)]
    await producer.start()
    try:
        started = time.perf_counter()
        sent = 0
        pending: list[asyncio.Future[Any]] = []
        while sent < records and time.perf_counter() - started < duration_s:
            # send() returns once the record is queued (waiting when buffers are full); the
            # acks are awaited in bulk so the producer always has records to batch.
            pending.append(await producer.send(topic, value, key=keys[sent % len(keys)]))
            sent += 1
            if len(pending) >= _ACK_WINDOW:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return {
        "tool": "aiokafka produce loop (ingest's producer settings: acks=all, idempotent, "
        "linger 5 ms); Kafka's ProducerPerformance is not in the cached jars",
        "records": sent,
        "records_per_s": round(sent / elapsed, 1),
        "mb_per_s": round(sent * record_size / elapsed / 1e6, 2),
    }


async def kafka_producer_ceiling(
    libs: Path, bootstrap: str, topic: str, *, record_size: int, records: int, duration_s: float
) -> dict[str, Any]:
    if find_producer_performance(libs):
        result = await asyncio.to_thread(
            _java_producer_ceiling, libs, bootstrap, topic, record_size, records
        )
    else:
        result = await _aiokafka_producer_ceiling(
            bootstrap, topic, record_size, records, duration_s
        )
    return {**result, "record_bytes": record_size}


async def postgres_copy_ceiling(
    database_url: str, *, rows: int, chunk: int, duration_s: float
) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {_SCRATCH_TABLE}")
        await conn.execute(f"CREATE TABLE {_SCRATCH_TABLE} (LIKE meter_events INCLUDING DEFAULTS)")
        await conn.execute(
            f"CREATE INDEX ON {_SCRATCH_TABLE} (account_id, livemode, meter_id, customer, event_ts)"
        )
        now_s = int(time.time())
        now_ms = now_s * 1000
        # Rows are built before the clock starts: this measures PostgreSQL, not tuple building.
        batches = [
            [
                ("acct_ceiling", False, "mtr_ceiling", f"cus_{n % 2000}", f"copy-{n}",
                 Decimal(n % 1000), now_s - n % 3600, now_ms + n, "b" * 32, n % 100)
                for n in range(first, min(rows, first + chunk))
            ]
            for first in range(0, rows, chunk)
        ]  # fmt: skip
        copied = 0
        started = time.perf_counter()
        for batch in batches:
            if time.perf_counter() - started > duration_s:
                break
            async with conn.transaction():
                await conn.copy_records_to_table(
                    _SCRATCH_TABLE, records=batch, columns=_COPY_COLUMNS
                )
            copied += len(batch)
        elapsed = time.perf_counter() - started
        await conn.execute(f"DROP TABLE {_SCRATCH_TABLE}")
    finally:
        await conn.close()
    return {
        "tool": "asyncpg copy_records_to_table into a logged table shaped like meter_events "
        f"(same columns and index), {chunk} rows per transaction",
        "rows": copied,
        "rows_per_s": round(copied / elapsed, 1),
    }
