"""Consumer lag, one gauge family of each kind per metrics registry, covering every folding
consumer the process runs (the rollup consumer and the error-report consumer share the
aggregator's registry; the alert evaluator has its own):

* ``meterflow_consumer_lag_records``: the broker's high watermark, as the consumer last fetched
  it, minus the next offset to fold, as the process recorded it after each committed batch or
  seek.
* ``meterflow_consumer_lag_seconds``: the age of the oldest record not yet folded. Each time the
  process looks at a partition (after every committed batch, and at every scrape) it notes the
  high watermark and, when the watermark has moved, the time. The record at the next offset to
  fold appeared by the first look whose watermark lay past it, so its age is known to within the
  time between two looks and never overstated. A backlog found at start counts from the start.

Both are computed when scraped, in the metrics server's thread: the sightings sit behind a lock.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol
from weakref import WeakKeyDictionary

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Sightings kept per partition. Past that, the one whose loss leaves the smallest gap goes (never
# the first or the last), so they stay evenly spread; a dropped one can only understate an age,
# by at most the gap it leaves.
MAX_SIGHTINGS = 256


class WatermarkSource(Protocol):
    """What lag needs of a consumer (``AIOKafkaConsumer`` provides it)."""

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...


class PartitionLag(NamedTuple):
    topic: str
    partition: int
    records: int
    seconds: float


@dataclass(eq=False)
class TrackedConsumer:
    group: str
    consumer: WatermarkSource
    clock: Callable[[], float] = time.monotonic
    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset to fold
    # partition -> (high watermark, when first seen), increasing in both; sightings at or below
    # the position are dropped, so the first one left dates the oldest record not yet folded.
    _sightings: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def folded_up_to(self, next_offsets: Mapping[int, int]) -> None:
        with self._lock:
            self.positions.update(next_offsets)
            self._look(self.clock())

    def lags(self) -> list[PartitionLag]:
        """Look at every assigned partition now; the lag of those with a known position."""
        with self._lock:
            now = self.clock()
            self._look(now)
            found: list[PartitionLag] = []
            for tp in sorted(self.consumer.assignment()):
                highwater = self.consumer.highwater(tp)
                position = self.positions.get(tp.partition)
                if highwater is None or position is None:
                    continue
                records = max(0, highwater - position)
                seen = self._sightings.get(tp.partition)
                seconds = now - seen[0][1] if records and seen else 0.0
                found.append(PartitionLag(tp.topic, tp.partition, records, seconds))
            return found

    def _look(self, now: float) -> None:
        assigned = self.consumer.assignment()
        for gone in self._sightings.keys() - {tp.partition for tp in assigned}:
            del self._sightings[gone]  # revoked: if it comes back, its history starts over
        for tp in assigned:
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            seen = self._sightings.setdefault(tp.partition, [])
            if not seen or highwater > seen[-1][0]:
                seen.append((highwater, now))
                if len(seen) > MAX_SIGHTINGS:
                    _drop_closest(seen)
            position = self.positions.get(tp.partition)
            if position is not None:
                del seen[: bisect.bisect_right(seen, position, key=lambda sighting: sighting[0])]


def _drop_closest(seen: list[tuple[int, float]]) -> None:
    """Drop the inner sighting whose neighbours are closest in time."""
    del seen[min(range(1, len(seen) - 1), key=lambda i: seen[i + 1][1] - seen[i - 1][1])]


@dataclass(eq=False)  # collectors are registered by identity
class LagCollector(Collector):
    tracked: list[TrackedConsumer] = field(default_factory=list)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        records = GaugeMetricFamily(
            "meterflow_consumer_lag_records",
            "Records between the next offset to fold and the partition's high watermark.",
            labels=["group", "topic", "partition"],
        )
        seconds = GaugeMetricFamily(
            "meterflow_consumer_lag_seconds",
            "Age of the oldest record not yet folded, from when this process first saw it on "
            "the broker (0 when caught up).",
            labels=["group", "topic", "partition"],
        )
        for tracked in self.tracked:
            for lag in tracked.lags():
                labels = [tracked.group, lag.topic, str(lag.partition)]
                records.add_metric(labels, lag.records)
                seconds.add_metric(labels, lag.seconds)
        yield records
        yield seconds


_COLLECTORS: WeakKeyDictionary[CollectorRegistry, LagCollector] = WeakKeyDictionary()


def track_lag(
    registry: CollectorRegistry,
    group: str,
    consumer: WatermarkSource,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> TrackedConsumer:
    """Report ``consumer``'s lag in ``registry``'s lag families; the caller records positions."""
    collector = _COLLECTORS.get(registry)
    if collector is None:
        collector = _COLLECTORS[registry] = LagCollector()
        registry.register(collector)
    tracked = TrackedConsumer(group, consumer, clock)
    collector.tracked.append(tracked)
    return tracked
