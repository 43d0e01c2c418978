"""Exactly once under crashes: aggregator processes SIGKILLed mid-stream, and two in one group."""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from decimal import Decimal

import pytest

from meterflow.kafka.topics import meter_events_topic
from meterflow.records.meter_events import EventsRecord
from tests.fixtures.aggregator_processes import Aggregators
from tests.fixtures.meter_events import (
    customer_totals,
    events_record,
    folded_offsets,
    produce,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NOW = int(time.time()) // 60 * 60


def _history(
    rng: random.Random, records: int
) -> tuple[list[EventsRecord], dict[str, tuple[Decimal, int]]]:
    """Random records with client resends; the expected (sum, count) per customer."""
    out: list[EventsRecord] = []
    sent: list[tuple[str, str, str, int]] = []
    expected: dict[str, list[Decimal | int]] = defaultdict(lambda: [Decimal(0), 0])
    for n in range(records):
        events = []
        for k in range(rng.randint(1, 8)):
            if sent and rng.random() < 0.1:
                events.append(rng.choice(sent))  # a resend: must not count again
                continue
            customer = f"cus_{rng.randint(1, 25)}"
            value = str(Decimal(rng.randint(-50, 500)) / 10)
            event = (f"id-{n}-{k}", customer, value, NOW - rng.randint(0, 3600))
            sent.append(event)
            expected[event[1]][0] += Decimal(event[2])
            expected[event[1]][1] += 1
            events.append(event)
        # Real receipt times: the retention pass prunes identifiers received over 48 h ago.
        out.append(events_record(NOW * 1000 + n, f"b{n}", events))
    return out, {c: (Decimal(s), int(k)) for c, (s, k) in expected.items()}


async def test_sigkill_mid_stream_loses_and_doubles_nothing(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    rng = random.Random(20261121)
    records, expected = _history(rng, 600)
    topic = meter_events_topic(topic_prefix)
    aggregators = Aggregators(
        {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "METERFLOW_TOPIC_PREFIX": topic_prefix,
            "METERFLOW_CONSUMER_GROUP": f"crash-{topic_prefix}",
            "METERFLOW_FOLD_BATCH_MAX": "15",  # many small transactions: kills land mid-stream
            "METERFLOW_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        }
    )
    chunks = [records[i : i + 100] for i in range(0, len(records), 100)]
    try:
        await aggregators.start()
        produced = 0
        for round_no, chunk in enumerate(chunks):
            await produce(kafka_bootstrap, topic, chunk)
            target = await folded_offsets(database_url, topic) + 10

            async def progressed(target: int = target) -> bool:
                return await folded_offsets(database_url, topic) >= target

            await wait_until(progressed, 60, "the aggregator to make progress")
            produced += len(chunk)
            if round_no == 2:
                await aggregators.start()  # a second member: partitions rebalance
            await aggregators.kill_one()  # SIGKILL while folding
            await aggregators.start()

        async def drained() -> bool:
            return await folded_offsets(database_url, topic) == produced

        await wait_until(drained, 120, "every record to be folded", interval_s=0.2)
    finally:
        await aggregators.stop_all()
    assert await customer_totals(database_url) == expected
