"""The memoised partition choice agrees with the producer's default partitioner."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from meterflow.kafka.partitions import PartitionMap


def test_partition_map_picks_what_the_default_partitioner_picks() -> None:
    partitions = list(range(12))
    choose = PartitionMap(12)
    keys = [f"acct_1:test:cus_{n}".encode() for n in range(500)] + [b"", b"\xff" * 40]
    for key in keys * 2:  # the second pass is answered from the cache
        assert choose(key) == DefaultPartitioner()(key, partitions, partitions)
    assert {choose(key) for key in keys} == set(partitions)
