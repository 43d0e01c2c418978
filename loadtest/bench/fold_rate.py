"""Aggregator fold rate: records produced ahead of time, then one aggregator timed through them.

Records follow meterflow/event_records.py exactly as ingest's stream endpoint produces them: each
request of 100 events becomes one record per Kafka partition its customers map to. The clock
runs from starting the aggregator process to every offset being folded (``consumer_offsets`` in
PostgreSQL), so the rate includes start-up and the consumer group join; the rate after the first
folded batch is reported too.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka.partitioner import murmur2

from deploy.children import meterflow_child
from deploy.ports import free_port
from loadtest.bench.processes import mib, peak_rss_kib
from loadtest.bench.stack import BenchStack
from meterflow.kafka.producer import REQUEST_LINGER_MS, REQUEST_MAX_BATCH_BYTES, idempotent_producer
from meterflow.kafka.topics import (
    METER_EVENTS_PARTITIONS,
    ensure_topics,
    meter_events_topic,
    topic_specs,
)
from meterflow.records.meter_events import (
    AcceptedEvent,
    EventsRecord,
    ReceiptClock,
    encode,
    partition_key,
)
from meterflow.usage.reader import folded_event_count
from meterflow.windows import HOUR_S

REQUEST_EVENTS = 100
_POLL_S = 0.1
_PRODUCE_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class FoldWorkload:
    name: str
    account_id: str
    meters: tuple[tuple[str, str], ...]  # (meter id, event name)
    customers: int
    events: int
    one_window: bool  # every event in the previous UTC hour: a heavy overwrite load


@dataclass(frozen=True, slots=True)
class ProducedWorkload:
    records: list[tuple[bytes, bytes]]  # (key, value)
    events: int
    series: int  # distinct (meter, customer) pairs


def build_records(workload: FoldWorkload, now_s: int, seed: int = 7) -> ProducedWorkload:
    rng = random.Random(seed)
    clock = ReceiptClock()
    previous_hour = now_s - now_s % HOUR_S - HOUR_S
    records: list[tuple[bytes, bytes]] = []
    series: set[tuple[str, str]] = set()
    for first in range(0, workload.events, REQUEST_EVENTS):
        groups: dict[int, list[tuple[bytes, AcceptedEvent]]] = {}
        for n in range(first, min(workload.events, first + REQUEST_EVENTS)):
            meter_id, event_name = rng.choice(workload.meters)
            customer = f"cus_fold{rng.randrange(workload.customers):05d}"
            if workload.one_window:
                timestamp_s = previous_hour + rng.randrange(HOUR_S)
            else:
                timestamp_s = now_s - rng.randrange(HOUR_S)
            event = AcceptedEvent(
                meter_id,
                event_name,
                f"fold-{workload.name}-{n}",
                customer,
                str(rng.randint(1, 1000)),
                timestamp_s,
            )
            series.add((meter_id, customer))
            key = partition_key(workload.account_id, False, customer)
            partition = (murmur2(key) & 0x7FFFFFFF) % METER_EVENTS_PARTITIONS
            groups.setdefault(partition, []).append((key, event))
        for group in groups.values():
            received_ms, batch = clock.stamp()
            record = EventsRecord(
                workload.account_id, False, received_ms, batch, tuple(e for _, e in group)
            )
            records.append((group[0][0], encode(record)))
    return ProducedWorkload(records, workload.events, len(series))


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Produce with ingest's producer settings; returns the seconds it took."""
    producer = idempotent_producer(
        bootstrap,
        "meterflow-ingest",
        linger_ms=REQUEST_LINGER_MS,
        max_batch_bytes=REQUEST_MAX_BATCH_BYTES,
        request_timeout_s=30.0,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        for first in range(0, len(records), _PRODUCE_CHUNK):
            chunk = records[first : first + _PRODUCE_CHUNK]
            acks = [await producer.send(topic, value, key=key) for key, value in chunk]
            await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _folded(conn: asyncpg.Connection, group: str, topic: str) -> int:
    total = await conn.fetchval(
        """SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets
           WHERE group_id = $1 AND topic = $2""",
        group,
        topic,
    )
    return int(total)


async def measure_fold(
    stack: BenchStack, workload: FoldWorkload, prefix: str, deadline_s: float
) -> dict[str, Any]:
    await ensure_topics(stack.bootstrap, topic_specs(prefix))
    topic = meter_events_topic(prefix)
    produced = build_records(workload, int(time.time()))
    produce_s = await produce(stack.bootstrap, topic, produced.records)
    records = len(produced.records)
    group = f"bench-fold-{workload.name}"
    child = meterflow_child(
        "aggregator",
        stack.child_env(
            METERFLOW_TOPIC_PREFIX=prefix,
            METERFLOW_CONSUMER_GROUP=group,
            METERFLOW_AGGREGATOR_METRICS_PORT=str(free_port()),
        ),
        stack.log_dir / f"aggregator-fold-{workload.name}.log",
    )
    conn = await asyncpg.connect(stack.database_url)
    progress: list[tuple[float, int]] = []
    first: tuple[float, int] | None = None
    done_s: float | None = None
    peak_kib: int | None = None
    started = time.perf_counter()
    child.start()
    try:
        while True:
            folded = await _folded(conn, group, topic)
            elapsed = time.perf_counter() - started
            progress.append((round(elapsed, 3), folded))
            if first is None and folded > 0:
                first = (elapsed, folded)
            if folded >= records:
                done_s = elapsed
                break
            if elapsed > deadline_s or not child.alive():
                break
            await asyncio.sleep(_POLL_S)
        assert child.pid is not None  # noqa: S101 - started above
        peak_kib = peak_rss_kib(child.pid)
        counted = await folded_event_count(conn, workload.account_id)
    finally:
        await asyncio.to_thread(child.stop, 15.0)
        await conn.close()
    result: dict[str, Any] = {
        "workload": workload.name,
        "records": records,
        "events": produced.events,
        "events_per_record": round(produced.events / max(1, records), 1),
        "customers": workload.customers,
        "meters": len(workload.meters),
        "series": produced.series,
        "produce_s": round(produce_s, 2),
        "finished": done_s is not None,
        "folded_records": progress[-1][1] if progress else 0,
        "seconds_to_first_fold": round(first[0], 2) if first else None,
        "seconds_total": round(done_s, 2) if done_s else None,
        "events_per_s": round(produced.events / done_s, 1) if done_s else None,
        "events_per_s_after_first_fold": None,
        "rollup_event_count": counted,
        "expected_rollup_event_count": produced.series if workload.one_window else produced.events,
        "peak_rss_mib": mib(peak_kib),
        "progress": progress,
    }
    if done_s and first and done_s > first[0]:
        remaining = produced.events * (records - first[1]) / records
        result["events_per_s_after_first_fold"] = round(remaining / (done_s - first[0]), 1)
    return result
