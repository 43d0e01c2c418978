"""Which partitions each fold lane fetches: every assigned partition in exactly one lane, and a
partition's lane independent of what else is assigned (so no two lanes of a process ever fold
the same partition, across rebalances too)."""

from __future__ import annotations

import pytest
from aiokafka.structs import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from meterflow.kafka.consumer import lane_partitions

TOPIC = "meter-events"


def _assigned(numbers: set[int]) -> set[TopicPartition]:
    return {TopicPartition(TOPIC, n) for n in numbers}


def test_one_lane_holds_every_assigned_partition_in_order() -> None:
    assert lane_partitions(_assigned({5, 0, 3}), 0, 1) == [
        TopicPartition(TOPIC, 0),
        TopicPartition(TOPIC, 3),
        TopicPartition(TOPIC, 5),
    ]


def test_partitions_are_dealt_by_number() -> None:
    assigned = _assigned(set(range(6)))
    assert [tp.partition for tp in lane_partitions(assigned, 0, 2)] == [0, 2, 4]
    assert [tp.partition for tp in lane_partitions(assigned, 1, 2)] == [1, 3, 5]


@given(
    st.sets(st.integers(min_value=0, max_value=63), max_size=64),
    st.sets(st.integers(min_value=0, max_value=63), max_size=64),
    st.integers(min_value=1, max_value=8),
)
def test_each_partition_in_exactly_one_lane_whatever_else_is_assigned(
    before: set[int], after: set[int], lanes: int
) -> None:
    def lane_of(assigned: set[int]) -> dict[int, int]:
        owner: dict[int, int] = {}
        for lane in range(lanes):
            for tp in lane_partitions(_assigned(assigned), lane, lanes):
                assert tp.partition not in owner
                owner[tp.partition] = lane
        assert set(owner) == assigned
        return owner

    first, second = lane_of(before), lane_of(after)
    assert all(first[p] == second[p] for p in before & after)


@pytest.mark.parametrize(("lane", "lanes"), [(2, 2), (-1, 2), (0, 0)])
def test_a_lane_outside_the_count_is_refused(lane: int, lanes: int) -> None:
    with pytest.raises(ValueError, match="lanes"):
        lane_partitions(_assigned({0}), lane, lanes)
