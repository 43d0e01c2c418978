"""The offsets store: each consumer group's next offsets in PostgreSQL (``consumer_offsets``).

A consumer writes a batch's offsets in the same transaction as what the batch produced, so the
batch and its offsets commit together or not at all:

1. :func:`fence_offsets` locks the offset rows of the batch's partitions and checks that each
   continues exactly where the last committed batch ended; otherwise it raises
   :class:`OffsetFenced` and the transaction rolls back.
2. The consumer writes what the batch produced.
3. :func:`advance_offsets` moves the stored offsets past the batch.

On every partition assignment a consumer seeks to :func:`stored_offsets`
(see :mod:`meterflow.kafka.consumer`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from meterflow.errors import MeterflowError
from meterflow.store.pg import Conn


class OffsetFenced(MeterflowError):
    """The stored offset is not where this batch starts: another consumer owns the partition now,
    or this one must re-seek. The transaction is rolled back; nothing is applied."""

    retriable = True


@dataclass(frozen=True, slots=True)
class PartitionSpan:
    """The offsets one batch covers in one Kafka partition: ``[first, next)``."""

    partition: int
    first_offset: int
    next_offset: int


def spans_of(offsets: Mapping[int, tuple[int, int]]) -> list[PartitionSpan]:
    """``{partition: (first offset, last offset)}`` -> spans covering ``[first, last + 1)``."""
    return [PartitionSpan(p, first, last + 1) for p, (first, last) in sorted(offsets.items())]


async def adopt_offsets(conn: Conn, group: str, topic: str, offsets: Mapping[int, int]) -> bool:
    """Store ``offsets`` for a group that has none stored for ``topic`` yet; False if it had."""
    status = await conn.execute(
        """INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)
           SELECT $1, $2, p, o FROM unnest($3::int[], $4::bigint[]) AS t(p, o)
           WHERE NOT EXISTS (SELECT 1 FROM consumer_offsets WHERE group_id = $1 AND topic = $2)
           ON CONFLICT DO NOTHING""",
        group,
        topic,
        list(offsets),
        list(offsets.values()),
    )
    return status != "INSERT 0 0"


async def stored_offsets(
    conn: Conn, group: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """``{partition: next offset}`` of the partitions that have one stored."""
    rows = await conn.fetch(
        """SELECT partition, next_offset FROM consumer_offsets
           WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::int[])""",
        group,
        topic,
        list(partitions),
    )
    return {r["partition"]: r["next_offset"] for r in rows}


async def fence_offsets(conn: Conn, group: str, topic: str, spans: Sequence[PartitionSpan]) -> None:
    """Lock this batch's offset rows and check each partition continues where it left off."""
    await conn.executemany(
        """INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
        [(group, topic, s.partition, s.first_offset) for s in spans],
    )
    rows = await conn.fetch(
        """SELECT partition, next_offset FROM consumer_offsets
           WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::int[]) FOR UPDATE""",
        group,
        topic,
        [s.partition for s in spans],
    )
    stored = {r["partition"]: r["next_offset"] for r in rows}
    for span in spans:
        if stored[span.partition] != span.first_offset:
            raise OffsetFenced(
                f"partition {span.partition}: stored offset {stored[span.partition]}, "
                f"batch starts at {span.first_offset}"
            )


async def advance_offsets(
    conn: Conn, group: str, topic: str, spans: Sequence[PartitionSpan]
) -> None:
    """Move the stored offsets past the batch (rows locked by :func:`fence_offsets`)."""
    await conn.executemany(
        """UPDATE consumer_offsets SET next_offset = $4, updated_at = now()
           WHERE group_id = $1 AND topic = $2 AND partition = $3""",
        [(group, topic, s.partition, s.next_offset) for s in spans],
    )
