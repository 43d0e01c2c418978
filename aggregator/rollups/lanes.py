"""Splitting a consumed batch into lanes the fold applies concurrently, one connection each.

A lane holds whole partitions, so each lane fences and advances only its own offsets, and the
lanes write disjoint rollups: a (meter, customer) series always maps to one partition (records
are keyed by account, mode and customer). The partitions are dealt largest first to the lane
holding the fewest records, which keeps the lanes' sizes close. Pure: no I/O here.
"""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord, TopicPartition

from meterflow.kafka.consumer import Batch


def lanes(batch: Batch, count: int) -> list[Batch]:
    """At most ``count`` non-empty lanes holding every partition of ``batch`` exactly once."""
    if count < 1:
        raise ValueError("a fold needs at least one lane")
    filled: list[dict[TopicPartition, list[ConsumerRecord]]] = [{} for _ in range(count)]
    sizes = [0] * count
    for tp, messages in sorted(batch.items(), key=lambda item: (-len(item[1]), item[0])):
        if not messages:
            continue
        smallest = min(range(count), key=sizes.__getitem__)
        filled[smallest][tp] = messages
        sizes[smallest] += len(messages)
    return [lane for lane in filled if lane]
