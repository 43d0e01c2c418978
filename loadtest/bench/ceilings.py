"""Ceilings on the same machine in the same run: what Kafka and PostgreSQL do with no meterflow.

* Kafka: records of a given size with ingest's producer settings (``acks=all``, idempotent), sent
  by Kafka's own ``ProducerPerformance`` (:mod:`loadtest.bench.producer_performance`), and beside
  it by a bare aiokafka loop, the client ingest uses. ProducerPerformance's figure is the ceiling;
  when Java or its jars cannot be had, the loop's is, with the reason.
* PostgreSQL: ``COPY`` of rows shaped like ``meter_events`` into a scratch table with the same
  columns and index, in transactions of the aggregator's batch size.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from loadtest.bench.producer_performance import (
    measure_producer_performance,
    producer_performance_classpath,
)
from meterflow.errors import MeterflowError
from meterflow.kafka.producer import REQUEST_LINGER_MS, REQUEST_MAX_BATCH_BYTES, idempotent_producer
from meterflow.records.meter_events import partition_key

_SCRATCH_TABLE = "bench_copy_ceiling"
_ACK_WINDOW = 20_000
_LOOP_CUSTOMERS = 1000
# ProducerPerformance runs at most this long per record size: "a few seconds", whatever the
# plan gives the loop.
_PERF_TARGET_S = 5.0
# The ceiling is kept as it was first measured, so ratios to it compare across runs: rows the
# width of a raw event keyed by its series' text (meter_events before series ids, sql/0017).
_SCRATCH_DDL = f"""CREATE TABLE {_SCRATCH_TABLE} (
    account_id text NOT NULL, livemode boolean NOT NULL, meter_id text NOT NULL,
    customer text NOT NULL, identifier text NOT NULL, value numeric NOT NULL,
    event_ts bigint NOT NULL, received_ms bigint NOT NULL, receipt_batch text NOT NULL,
    receipt_index integer NOT NULL, cancelled boolean NOT NULL DEFAULT false)"""
_COPY_COLUMNS = (
    "account_id", "livemode", "meter_id", "customer", "identifier", "value", "event_ts",
    "received_ms", "receipt_batch", "receipt_index",
)  # fmt: skip
_INGEST_SETTINGS = (
    f"acks=all, idempotent, linger {REQUEST_LINGER_MS} ms, "
    f"{REQUEST_MAX_BATCH_BYTES // 1024} KiB batches, no compression"
)


def _loop_tool(settings: str) -> str:
    return (
        f"aiokafka produce loop with ingest's producer settings{settings}, records keyed by "
        f"{_LOOP_CUSTOMERS:,} customers"
    )


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
    keys = [partition_key("acct_ceiling", False, f"cus_{n}") for n in range(_LOOP_CUSTOMERS)]
    await producer.start()
    try:
        # One record per key before the clock starts: partition leaders of a topic created a
        # moment ago are still being elected, and the retries would be timed as the client's.
        warmup = [await producer.send(topic, value, key=key) for key in keys]
        await asyncio.gather(*warmup)
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
        "tool": _loop_tool(""),
        "records": sent,
        "records_per_s": round(sent / elapsed, 1),
        "mb_per_s": round(sent * record_size / elapsed / 1e6, 2),
    }


async def kafka_producer_ceiling(
    version: str,
    cache_dir: Path,
    bootstrap: str,
    topic: str,
    *,
    record_size: int,
    records: int,
    duration_s: float,
) -> dict[str, Any]:
    """Kafka's ceiling for ``record_size``-byte records: ProducerPerformance's figures (from the
    jars of Kafka ``version`` in ``cache_dir``) with the aiokafka loop's under ``"aiokafka"``, or
    the loop's alone with ``"producer_performance_error"`` saying why the tool did not run."""
    loop = await _aiokafka_producer_ceiling(bootstrap, topic, record_size, records, duration_s)
    target_s = min(duration_s, _PERF_TARGET_S)
    try:
        classpath = await asyncio.to_thread(producer_performance_classpath, version, cache_dir)
        measured = await asyncio.to_thread(
            measure_producer_performance,
            classpath,
            bootstrap,
            topic,
            record_size=record_size,
            duration_s=target_s,
        )
    except MeterflowError as exc:
        return {
            **loop,
            "tool": _loop_tool(f" ({_INGEST_SETTINGS})"),
            "source": "aiokafka",
            "record_bytes": record_size,
            "producer_performance_error": str(exc),
        }
    warmup = measured["warmup_records"]
    tool = (
        f"Kafka {version}'s ProducerPerformance (kafka-producer-perf-test) with ingest's producer "
        f"settings ({_INGEST_SETTINGS}), unkeyed records (the producer fills one partition's "
        "batch at a time), its record count sized by a calibration run to last about "
        f"{target_s:.0f} s"
        + (
            f" after {warmup:,} warm-up records its figures leave out "
            f"({measured['whole_run_records_per_s']:,.0f} records/s with them)"
            if warmup
            else " (this version has no warm-up option: the figures include the producer's start)"
        )
        + "; unthrottled, so latencies include waiting in the producer's 32 MiB buffer"
    )
    return {
        **measured,
        "tool": tool,
        "source": "ProducerPerformance",
        "record_bytes": record_size,
        "aiokafka": loop,
    }


async def postgres_copy_ceiling(
    database_url: str, *, rows: int, chunk: int, duration_s: float
) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {_SCRATCH_TABLE}")
        await conn.execute(_SCRATCH_DDL)
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
        "tool": "asyncpg copy_records_to_table into a logged table of text-keyed raw events "
        f"(meter_events' columns and window index before series ids), {chunk} rows per "
        "transaction",
        "rows": copied,
        "rows_per_s": round(copied / elapsed, 1),
    }
