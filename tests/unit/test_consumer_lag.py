"""One lag family per registry, covering every consumer the process tracks."""

from dataclasses import dataclass, field

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest

from meterflow.kafka.lag import track_lag


@dataclass
class Watermarks:
    """Stands in for a consumer's assignment and fetched high watermarks."""

    highwaters: dict[TopicPartition, int | None] = field(default_factory=dict)

    def assignment(self) -> set[TopicPartition]:
        return set(self.highwaters)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self.highwaters[partition]


def _lag_lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith("meterflow_consumer_lag")]


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
