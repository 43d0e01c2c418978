"""One lag family of each kind per registry, covering every consumer the process tracks; lag in
seconds dates the oldest record not yet folded from the first look that saw it."""

from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest

from meterflow.kafka.lag import MAX_SIGHTINGS, track_lag


@dataclass
class Watermarks:
    """Stands in for a consumer's assignment and fetched high watermarks."""

    highwaters: dict[TopicPartition, int | None] = field(default_factory=dict)

    def assignment(self) -> set[TopicPartition]:
        return set(self.highwaters)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self.highwaters[partition]


def _lag_lines(registry: CollectorRegistry, unit: str = "records") -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith(f"meterflow_consumer_lag_{unit}")]


def test_two_consumers_share_one_family_and_unknown_positions_are_left_out() -> None:
    registry = CollectorRegistry()
    rollups = track_lag(
        registry,
        "meterflow-aggregator",
        Watermarks({TopicPartition("meter-events", 0): 120, TopicPartition("meter-events", 1): 7}),
    )
    rejected = track_lag(
        registry,
        "meterflow-aggregator-error-reports",
        Watermarks({TopicPartition("meter-events-rejected", 2): None}),
    )
    assert _lag_lines(registry) == []  # nothing folded or sought yet: no position known
    rollups.folded_up_to({0: 100, 1: 9})  # a position past the last fetched watermark counts 0
    rejected.folded_up_to({2: 5})  # no watermark fetched yet
    assert _lag_lines(registry) == [
        'meterflow_consumer_lag_records{group="meterflow-aggregator",partition="0",'
        'topic="meter-events"} 20.0',
        'meterflow_consumer_lag_records{group="meterflow-aggregator",partition="1",'
        'topic="meter-events"} 0.0',
    ]
    text = generate_latest(registry).decode()
    assert text.count("# TYPE meterflow_consumer_lag_records gauge") == 1
    assert text.count("# TYPE meterflow_consumer_lag_seconds gauge") == 1


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


P0 = TopicPartition("meter-events", 0)


def _seconds(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value(
        "meterflow_consumer_lag_seconds",
        {"group": "g", "topic": "meter-events", "partition": "0"},
    )


def test_seconds_date_the_oldest_unfolded_record_from_the_first_look_past_it() -> None:
    registry = CollectorRegistry()
    clock = Clock(100.0)
    watermarks = Watermarks({P0: 10})
    tracked = track_lag(registry, "g", watermarks, clock=clock)
    tracked.folded_up_to({0: 10})
    assert _seconds(registry) == 0.0  # caught up

    clock.now, watermarks.highwaters[P0] = 101.0, 15  # five records arrive; a scrape sees them
    assert _seconds(registry) == 0.0
    clock.now = 104.0
    assert _seconds(registry) == pytest.approx(3.0)
    clock.now, watermarks.highwaters[P0] = 105.0, 20  # more arrive; a batch folds up to 12
    tracked.folded_up_to({0: 12})
    assert _seconds(registry) == pytest.approx(4.0)  # offset 12 was seen at 101
    clock.now = 107.0
    tracked.folded_up_to({0: 16})  # offsets 15..19 were first seen at 105
    assert _seconds(registry) == pytest.approx(2.0)
    tracked.folded_up_to({0: 20})
    assert _seconds(registry) == 0.0


def test_a_stalled_consumer_ages_while_records_arrive_behind_it() -> None:
    registry = CollectorRegistry()
    clock = Clock(0.0)
    watermarks = Watermarks({P0: 5})
    tracked = track_lag(registry, "g", watermarks, clock=clock)
    tracked.folded_up_to({0: 5})
    for second in range(1, 61):  # no batch commits; every scrape sees one more record
        clock.now, watermarks.highwaters[P0] = float(second), 5 + second
        assert _seconds(registry) == pytest.approx(second - 1.0)


def test_sightings_stay_bounded_and_never_overstate_an_age() -> None:
    registry = CollectorRegistry()
    clock = Clock(0.0)
    watermarks = Watermarks({P0: 0})
    tracked = track_lag(registry, "g", watermarks, clock=clock)
    tracked.folded_up_to({0: 0})
    for second in range(1, 10 * MAX_SIGHTINGS):
        clock.now, watermarks.highwaters[P0] = float(second), second
        _seconds(registry)
    assert len(tracked._sightings[0]) <= MAX_SIGHTINGS
    clock.now = 10_000.0
    assert _seconds(registry) == pytest.approx(10_000.0 - 1.0)  # the very first look is kept
    tracked.folded_up_to({0: 1000})  # offset 1000 was first seen at 1001
    age = _seconds(registry)
    assert age is not None
    assert 10_000.0 - 1001.0 - 20 <= age <= 10_000.0 - 1001.0  # the sightings stay evenly spread


def test_a_revoked_partition_forgets_its_history() -> None:
    registry = CollectorRegistry()
    clock = Clock(0.0)
    watermarks = Watermarks({P0: 10})
    tracked = track_lag(registry, "g", watermarks, clock=clock)
    tracked.folded_up_to({0: 0})
    del watermarks.highwaters[P0]
    clock.now = 50.0
    assert _seconds(registry) is None
    watermarks.highwaters[P0] = 10  # assigned again, still behind: counts from now
    assert _seconds(registry) == 0.0
