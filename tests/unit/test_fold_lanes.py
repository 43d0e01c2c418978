"""Splitting a consumed batch into fold lanes: whole partitions, each exactly once, sizes close."""

from __future__ import annotations

import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from aggregator.rollups.lanes import lanes
from meterflow.kafka.consumer import Batch

TOPIC = "meter-events"


def _batch(sizes: dict[int, int]) -> Batch:
    return {
        TopicPartition(TOPIC, partition): [
            ConsumerRecord(TOPIC, partition, offset, 0, 0, None, b"", 0, 0, (), None)
            for offset in range(size)
        ]
        for partition, size in sizes.items()
    }


def test_one_lane_is_the_whole_batch() -> None:
    batch = _batch({0: 3, 1: 5})
    assert lanes(batch, 1) == [dict(batch)]


def test_partitions_are_dealt_to_the_emptiest_lane() -> None:
    parts = lanes(_batch({0: 10, 1: 6, 2: 5, 3: 1}), 2)
    assert [sorted(tp.partition for tp in lane) for lane in parts] == [[0, 3], [1, 2]]


def test_empty_lanes_and_empty_partitions_are_left_out() -> None:
    parts = lanes(_batch({4: 2, 5: 0}), 3)
    assert [list(lane) for lane in parts] == [[TopicPartition(TOPIC, 4)]]


def test_a_fold_needs_a_lane() -> None:
    with pytest.raises(ValueError, match="at least one lane"):
        lanes(_batch({0: 1}), 0)


@given(st.dictionaries(st.integers(0, 11), st.integers(0, 40)), st.integers(1, 4))
def test_every_partition_lands_in_exactly_one_lane(sizes: dict[int, int], count: int) -> None:
    parts = lanes(_batch(sizes), count)
    seen = [tp.partition for lane in parts for tp in lane]
    assert sorted(seen) == sorted(p for p, n in sizes.items() if n)
    assert len(parts) <= count
    totals = [sum(len(m) for m in lane.values()) for lane in parts]
    if totals:
        # Greedy largest-first: lanes differ by at most the largest partition.
        assert max(totals) - min(totals) <= max(sizes.values())
