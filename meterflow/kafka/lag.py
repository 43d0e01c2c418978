"""``meterflow_consumer_lag_records``: one gauge family per metrics registry, covering every
folding consumer the process runs (the rollup consumer and the error-report consumer share the
aggregator's registry; the alert evaluator has its own).

Lag is computed when scraped: the broker's high watermark, as the consumer last fetched it, minus
the next offset to fold, as the process recorded it after each committed batch or seek.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from weakref import WeakKeyDictionary

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class WatermarkSource(Protocol):
    """What lag needs of a consumer (``AIOKafkaConsumer`` provides it)."""

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...


@dataclass(eq=False)
class TrackedConsumer:
    group: str
    consumer: WatermarkSource
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset to fold

    def folded_up_to(self, next_offsets: Mapping[int, int]) -> None:
        self.positions.update(next_offsets)


@dataclass(eq=False)  # collectors are registered by identity
class LagCollector(Collector):
    tracked: list[TrackedConsumer] = field(default_factory=list)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "meterflow_consumer_lag_records",
            "Records between the next offset to fold and the partition's high watermark.",
            labels=["group", "topic", "partition"],
        )
        for tracked in self.tracked:
            for tp in sorted(tracked.consumer.assignment()):
                highwater = tracked.consumer.highwater(tp)
                position = tracked.positions.get(tp.partition)
                if highwater is not None and position is not None:
                    family.add_metric(
                        [tracked.group, tp.topic, str(tp.partition)], max(0, highwater - position)
                    )
        yield family


_COLLECTORS: WeakKeyDictionary[CollectorRegistry, LagCollector] = WeakKeyDictionary()


def track_lag(
    registry: CollectorRegistry, group: str, consumer: WatermarkSource
) -> TrackedConsumer:
    """Report ``consumer``'s lag in ``registry``'s one lag family; the caller records positions."""
    collector = _COLLECTORS.get(registry)
    if collector is None:
        collector = _COLLECTORS[registry] = LagCollector()
        registry.register(collector)
    tracked = TrackedConsumer(group, consumer)
    collector.tracked.append(tracked)
    return tracked
