"""Aggregator fold rate: records produced ahead of time, then aggregators timed through them.

Records follow meterflow/records/meter_events.py exactly as ingest's stream endpoint produces them:
each request of 100 events becomes one record per Kafka partition its customers map to.
Identifiers are random UUID text, as clients send them, so the dedupe set's primary key takes
them at random places like it does in production. The clock runs from starting the aggregator
processes (one or more in one consumer group) to every offset being folded (``consumer_offsets``
in PostgreSQL), so the rate includes start-up and the consumer group join; the rate after the
first folded batch is reported too.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka.partitioner import murmur2

from deploy.children import meterflow_child
from deploy.ports import free_port
from loadtest.bench.pg_io import io_counters, per_event
from loadtest.bench.processes import mib, peak_rss_kib
from loadtest.bench.stack import STOP_DEADLINE_S, BenchStack
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
# Customer ids as long as Stripe's (``cus_`` and 14 characters); the preload uses the same.
CUSTOMER_PREFIX = "cus_fold"
CUSTOMER_DIGITS = 10
_POLL_S = 0.1
_PRODUCE_CHUNK = 2000


def customer_id(n: int) -> str:
    return f"{CUSTOMER_PREFIX}{n:0{CUSTOMER_DIGITS}d}"


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


def build_records(
    workload: FoldWorkload, now_s: int, seed: int = 7, first: int = 0, count: int | None = None
) -> ProducedWorkload:
    """The records of events ``first`` to ``first + count`` of the workload (all by default);
    the same arguments give the same records, and different slices different identifiers."""
    last = workload.events if count is None else min(workload.events, first + count)
    rng = random.Random(f"{seed}:{workload.name}:{first}")
    clock = ReceiptClock()
    previous_hour = now_s - now_s % HOUR_S - HOUR_S
    records: list[tuple[bytes, bytes]] = []
    series: set[tuple[str, str]] = set()
    for start in range(first, last, REQUEST_EVENTS):
        groups: dict[int, list[tuple[bytes, AcceptedEvent]]] = {}
        for _ in range(start, min(last, start + REQUEST_EVENTS)):
            meter_id, event_name = rng.choice(workload.meters)
            customer = customer_id(rng.randrange(workload.customers))
            if workload.one_window:
                timestamp_s = previous_hour + rng.randrange(HOUR_S)
            else:
                timestamp_s = now_s - rng.randrange(HOUR_S)
            event = AcceptedEvent(
                meter_id,
                event_name,
                str(uuid.UUID(int=rng.getrandbits(128), version=4)),
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
    return ProducedWorkload(records, last - first, len(series))


def record_slices(
    workloads: list[FoldWorkload], now_s: int, slice_events: int
) -> Iterator[ProducedWorkload]:
    """The workloads' records a slice of ``slice_events`` events at a time, the workloads taking
    turns, so a large workload is produced without holding all of it in memory."""
    for first in range(0, max(w.events for w in workloads), slice_events):
        for workload in workloads:
            if first < workload.events:
                yield build_records(workload, now_s, first=first, count=slice_events)


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


async def folded_records(conn: asyncpg.Connection, group: str, topic: str) -> int:
    """Records folded by a consumer group: the sum of its stored next offsets."""
    total = await conn.fetchval(
        """SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets
           WHERE group_id = $1 AND topic = $2""",
        group,
        topic,
    )
    return int(total)


@dataclass(slots=True)
class FoldRun:
    """How a group of aggregator processes went through a topic's records."""

    records: int
    progress: list[tuple[float, int]]  # (seconds since start, records folded)
    first: tuple[float, int] | None  # the first poll that saw folded records
    done_s: float | None  # None: the deadline passed or a process died first
    peak_rss_kib: list[int | None]  # per process


async def fold_through(
    stack: BenchStack,
    *,
    prefix: str,
    group: str,
    records: int,
    aggregators: int,
    deadline_s: float,
    log_name: str,
) -> FoldRun:
    """Start ``aggregators`` processes in one consumer group on ``prefix``'s topics and wait until
    they have folded ``records`` records (or the deadline passes, or one of them dies)."""
    topic = meter_events_topic(prefix)
    children = [
        meterflow_child(
            "aggregator",
            stack.child_env(
                METERFLOW_TOPIC_PREFIX=prefix,
                METERFLOW_CONSUMER_GROUP=group,
                METERFLOW_AGGREGATOR_METRICS_PORT=str(free_port()),
            ),
            stack.log_dir / f"aggregator-{log_name}-{n + 1}.log",
        )
        for n in range(aggregators)
    ]
    conn = await asyncpg.connect(stack.database_url)
    run = FoldRun(records, [], None, None, [])
    started = time.perf_counter()
    try:
        for child in children:
            child.start()
        while True:
            folded = await folded_records(conn, group, topic)
            elapsed = time.perf_counter() - started
            run.progress.append((round(elapsed, 3), folded))
            if run.first is None and folded > 0:
                run.first = (elapsed, folded)
            if folded >= records:
                run.done_s = elapsed
                break
            if elapsed > deadline_s or not all(child.alive() for child in children):
                break
            await asyncio.sleep(_POLL_S)
        run.peak_rss_kib = [peak_rss_kib(c.pid) if c.pid else None for c in children]
    finally:
        await asyncio.gather(
            *(asyncio.to_thread(child.stop, STOP_DEADLINE_S) for child in children)
        )
        await conn.close()
    return run


async def measure_fold(
    stack: BenchStack,
    workload: FoldWorkload,
    prefix: str,
    deadline_s: float,
    aggregators: int = 1,
) -> dict[str, Any]:
    await ensure_topics(stack.bootstrap, topic_specs(prefix))
    topic = meter_events_topic(prefix)
    produced = build_records(workload, int(time.time()))
    produce_s = await produce(stack.bootstrap, topic, produced.records)
    records = len(produced.records)
    conn = await asyncpg.connect(stack.database_url)
    try:
        # The account may hold earlier folds (the preload's runs share one): count the change.
        counted_before = await folded_event_count(conn, workload.account_id)
        io_before = await io_counters(conn)
        run = await fold_through(
            stack,
            prefix=prefix,
            group=f"bench-fold-{workload.name}",
            records=records,
            aggregators=aggregators,
            deadline_s=deadline_s,
            log_name=f"fold-{workload.name}",
        )
        counted = await folded_event_count(conn, workload.account_id) - counted_before
        io = per_event(io_before, await io_counters(conn), produced.events)
    finally:
        await conn.close()
    done_s, first = run.done_s, run.first
    peaks = [mib(kib) for kib in run.peak_rss_kib]
    known = [p for p in peaks if p is not None]
    result: dict[str, Any] = {
        "workload": workload.name,
        "aggregators": aggregators,
        "records": records,
        "events": produced.events,
        "events_per_record": round(produced.events / max(1, records), 1),
        "customers": workload.customers,
        "meters": len(workload.meters),
        "series": produced.series,
        "produce_s": round(produce_s, 2),
        "finished": done_s is not None,
        "folded_records": run.progress[-1][1] if run.progress else 0,
        "seconds_to_first_fold": round(first[0], 2) if first else None,
        "seconds_total": round(done_s, 2) if done_s else None,
        "events_per_s": round(produced.events / done_s, 1) if done_s else None,
        "events_per_s_after_first_fold": None,
        "rollup_event_count": counted,
        "expected_rollup_event_count": produced.series if workload.one_window else produced.events,
        "peak_rss_mib": max(known) if known else None,
        "database_per_event": io,
        "peak_rss_mib_each": peaks,
        "progress": run.progress,
    }
    if done_s and first and done_s > first[0]:
        remaining = produced.events * (records - first[1]) / records
        result["events_per_s_after_first_fold"] = round(remaining / (done_s - first[0]), 1)
    return result
