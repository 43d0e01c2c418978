"""Which partition a record key lands in, as Kafka's default partitioner decides, memoised.

aiokafka's murmur2 is pure Python; producers that already know a record's partition pass it
explicitly, and keys repeat (customers, series), so each distinct key is hashed once.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2

# Keys cached per map before it starts over: a bounded memory cost (~100 bytes a key).
MAX_CACHED_KEYS = 200_000


class PartitionMap:
    """``PartitionMap(12)(key)``: the partition of ``key`` among 12, as the producer picks it."""

    def __init__(self, partitions: int) -> None:
        self._partitions = partitions
        self._cache: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= MAX_CACHED_KEYS:
                self._cache.clear()
            found = self._cache[key] = (murmur2(key) & 0x7FFFFFFF) % self._partitions
        return found
