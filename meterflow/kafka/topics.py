"""meterflow's Kafka topics: names, partition counts and configs, created explicitly.

Brokers run with ``auto.create.topics.enable=false``; every process calls :func:`ensure_topics` at
start-up, so a misspelt topic name fails loudly instead of silently creating an empty topic.
Ingest and aggregator take topic names from here, never from string literals of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from meterflow.errors import LauncherError
from meterflow.kafka.security import PLAINTEXT, client_security
from meterflow.settings.roles import KafkaSecuritySettings

METER_EVENTS = "meter-events"
METER_EVENTS_REJECTED = "meter-events-rejected"
USAGE_CHANGES = "usage-changes"
V1_EVENTS = "events"

_DAY_MS = 24 * 60 * 60 * 1000

# Stripe accepts meter events whose timestamp is up to 35 days in the past; keeping 40 days lets a
# replay rebuild every rollup that can still change, with five days' slack to notice a problem.
EVENT_RETENTION_MS = 40 * _DAY_MS

# 12 partitions: the unit of aggregator parallelism. 12 divides evenly among 1, 2, 3, 4, 6 or 12
# consumers, and the count can never shrink, while growing it remaps customers to partitions and
# breaks per-customer ordering; twelve is cheap on one node and leaves room to scale out.
METER_EVENTS_PARTITIONS = 12
# Rejections are rare and read only for diagnostics; three partitions are enough.
METER_EVENTS_REJECTED_PARTITIONS = 3
# Usage changes are keyed by (meter, customer) like the events they summarise, and spread over
# alert evaluators the way events spread over aggregators.
USAGE_CHANGES_PARTITIONS = 12
# Notifications (alert firings) are few; three partitions keep per-account order cheap.
V1_EVENTS_PARTITIONS = 3
# Stripe keeps events for 30 days; the topic keeps them as long.
V1_EVENTS_RETENTION_MS = 30 * _DAY_MS
# Usage changes only drive evaluation; a week lets a stopped evaluator catch up or be replayed.
USAGE_CHANGES_RETENTION_MS = 7 * _DAY_MS

_COMMON_CONFIGS: Mapping[str, str] = {
    "cleanup.policy": "delete",
    "retention.ms": str(EVENT_RETENTION_MS),
    # Time-based retention follows the record timestamp. Events may be back-dated by weeks, so the
    # record timestamp is set by the broker at append and the event time lives in the value;
    # otherwise a 30-day-old event would be deleted moments after it arrived.
    "message.timestamp.type": "LogAppendTime",
    # A segment is deleted only once its newest record is past retention; daily segments keep the
    # real retention near 40 days instead of 40 + the 7-day default segment.ms.
    "segment.ms": str(_DAY_MS),
    # Keep whatever codec the producer chose (the producers pick it): a broker-side codec would
    # make the broker decompress and recompress every batch, which a small box cannot afford.
    "compression.type": "producer",
}


@dataclass(frozen=True)
class TopicSpec:
    """One topic as meterflow wants it."""

    name: str
    partitions: int
    configs: Mapping[str, str]


def meter_events_topic(prefix: str) -> str:
    """Accepted meter events, keyed by customer: the stream the aggregator folds."""
    return f"{prefix}{METER_EVENTS}"


def meter_events_rejected_topic(prefix: str) -> str:
    """Events that failed validation after acceptance, kept for diagnostics."""
    return f"{prefix}{METER_EVENTS_REJECTED}"


def usage_changes_topic(prefix: str) -> str:
    """What each committed fold changed, per (meter, customer): the alert evaluator's input."""
    return f"{prefix}{USAGE_CHANGES}"


def v1_events_topic(prefix: str) -> str:
    """v1 snapshot events (``billing.alert.triggered``), keyed by account."""
    return f"{prefix}{V1_EVENTS}"


def topic_specs(prefix: str) -> list[TopicSpec]:
    """Every topic meterflow uses, names prefixed (e.g. ``meterflow.``)."""
    return [
        TopicSpec(meter_events_topic(prefix), METER_EVENTS_PARTITIONS, dict(_COMMON_CONFIGS)),
        TopicSpec(
            meter_events_rejected_topic(prefix),
            METER_EVENTS_REJECTED_PARTITIONS,
            dict(_COMMON_CONFIGS),
        ),
        TopicSpec(
            usage_changes_topic(prefix),
            USAGE_CHANGES_PARTITIONS,
            {**_COMMON_CONFIGS, "retention.ms": str(USAGE_CHANGES_RETENTION_MS)},
        ),
        TopicSpec(
            v1_events_topic(prefix),
            V1_EVENTS_PARTITIONS,
            {**_COMMON_CONFIGS, "retention.ms": str(V1_EVENTS_RETENTION_MS)},
        ),
    ]


def min_insync_replicas(replication_factor: int) -> int:
    """An acks=all write must reach two replicas once there are three; fewer cannot afford it."""
    return 2 if replication_factor >= 3 else 1


async def ensure_topics(
    bootstrap_servers: str,
    specs: Sequence[TopicSpec],
    replication_factor: int = 1,
    timeout_s: float = 30.0,
    security: KafkaSecuritySettings = PLAINTEXT,
) -> list[str]:
    """Create the missing topics and wait until all are usable; return the names created here.

    A topic created concurrently by another process counts as existing. An existing topic with
    fewer partitions than specified is an error: adding them later would remap keys.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="meterflow-topics",
        request_timeout_ms=int(timeout_s * 1000),
        **client_security(security),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [spec for spec in specs if spec.name not in existing]
            created = await _create(admin, missing, replication_factor, timeout_s)
            await _wait_until_usable(admin, specs)
    except TimeoutError as exc:
        raise LauncherError(f"Kafka topics not ready within {timeout_s:.0f}s") from exc
    except KafkaError as exc:
        raise LauncherError(f"cannot create Kafka topics: {exc!r}") from exc
    finally:
        await admin.close()
    return created


async def _create(
    admin: AIOKafkaAdminClient,
    specs: Sequence[TopicSpec],
    replication_factor: int,
    timeout_s: float,
) -> list[str]:
    if not specs:
        return []
    new_topics = [
        NewTopic(
            name=spec.name,
            num_partitions=spec.partitions,
            replication_factor=replication_factor,
            topic_configs={
                "min.insync.replicas": str(min_insync_replicas(replication_factor)),
                **spec.configs,
            },
        )
        for spec in specs
    ]
    response = await admin.create_topics(new_topics, timeout_ms=int(timeout_s * 1000))
    created: list[str] = []
    for name, code, message, *_ in response.topic_errors:
        if code == 0:
            created.append(name)
        elif code != TopicAlreadyExistsError.errno:  # lost a race with another process: fine
            error = for_code(code)
            raise LauncherError(f"cannot create topic {name}: {error.__name__}: {message}")
    return created


async def _wait_until_usable(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> None:
    # CreateTopics answers once the controller committed the topic; the broker that will serve it
    # may apply that metadata a moment later, so poll until every partition has a leader.
    wanted = {spec.name: spec for spec in specs}
    while wanted:
        for topic in await admin.describe_topics(list(wanted)):
            spec = wanted[topic["topic"]]
            partitions: list[dict[str, Any]] = topic["partitions"]
            if topic["error_code"] != 0 or not partitions:
                continue
            if len(partitions) < spec.partitions:
                raise LauncherError(
                    f"topic {spec.name} has {len(partitions)} partitions, meterflow needs "
                    f"{spec.partitions}; adding partitions remaps keys, so migrate it deliberately"
                )
            if all(p["leader"] >= 0 for p in partitions):
                del wanted[spec.name]
        if wanted:
            await asyncio.sleep(0.1)
