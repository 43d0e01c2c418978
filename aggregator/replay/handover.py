"""The hand-over: how a rebuild takes the place of the live rollups while ingest keeps running.

The live consumer group keeps folding while the rebuild reads the topic. The rebuild never
folds a record the live group has not folded: it reads each partition only up to the group's
stored offset (where the group will continue). Once it is within a few thousand records of the
live group, it compares the shadow with the live tables over the whole scope, without holding
anything: a key that is equal now stays equal unless a record folded after this point touches
it. Then one transaction on the shadow connection:

1. inserts, for each partition the live group has no stored offset for, the partition's first
   offset (where that group would start anyway), then locks every one of the group's offset
   rows (``SELECT … FOR UPDATE``, in partition order). From here until the commit, a live fold
   blocks at its fence (:func:`meterflow.kafka.offsets.fence_offsets`), before it writes
   anything; ingest is not blocked, records keep arriving in Kafka;
2. reads the locked offsets and folds the records between the shadow's positions and them into
   the shadow tables, noting the (meter, customer, day) each event touches and the
   (meter, customer) each cancel touches: the shadow now holds exactly the records
   ``[start, stored offset)`` of every partition, the same ones the live tables hold;
3. compares the shadow with the live tables again, over the keys that differed before and the
   keys step 2 touched only (:func:`~aggregator.replay.compare.compare`): every other key was
   equal and no record since touched it on either side, so this is the exact difference, found
   in a time that grows with the records of step 2 and the differences, not with the scope;
4. with ``apply``, replaces the live rows that differ (:func:`~aggregator.replay.swap.swap`);
5. commits. The live fold's blocked batch then passes its fence, since the offsets did not move,
   and folds onto the rows as they now are; every record after the stored offsets is folded by
   the live group, once, and none before it again.

Readers see the rows before or after the swap, never a mix: it is one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aggregator.replay.compare import Bounds, Difference, compare, recheck
from aggregator.replay.scope import RebuildRefused
from aggregator.replay.shadow import Schemas
from aggregator.replay.shadow_fold import ShadowFolder
from aggregator.replay.swap import Swapped, swap
from meterflow.store.pg import Conn


@dataclass(frozen=True, slots=True)
class HandOver:
    offsets: dict[int, int]  # the live group's offsets the comparison was made at
    differences: list[Difference]
    swapped: Swapped | None
    held_s: float  # how long the live group waited


async def live_offsets(
    conn: Conn, live_schema: str, group: str, topic: str, beginnings: Mapping[int, int]
) -> dict[int, int]:
    """Where the live group continues in each partition: its stored offset, or the partition's
    first offset when it has folded nothing there yet."""
    rows = await conn.fetch(
        f"""SELECT partition, next_offset FROM {live_schema}.consumer_offsets
            WHERE group_id = $1 AND topic = $2""",
        group,
        topic,
    )
    stored = {r["partition"]: r["next_offset"] for r in rows}
    return {p: stored.get(p, first) for p, first in beginnings.items()}


async def _lock_live_offsets(
    conn: Conn, live_schema: str, group: str, topic: str, beginnings: Mapping[int, int]
) -> dict[int, int]:
    """Step 1 of the module docstring; returns the locked offsets."""
    await conn.executemany(
        f"""INSERT INTO {live_schema}.consumer_offsets (group_id, topic, partition, next_offset)
            VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
        [(group, topic, p, first) for p, first in sorted(beginnings.items())],
    )
    rows = await conn.fetch(
        f"""SELECT partition, next_offset FROM {live_schema}.consumer_offsets
            WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::int[])
            ORDER BY partition FOR UPDATE""",
        group,
        topic,
        sorted(beginnings),
    )
    return {r["partition"]: r["next_offset"] for r in rows}


async def hand_over(
    conn: Conn,
    schemas: Schemas,
    folder: ShadowFolder,
    *,
    group: str,
    topic: str,
    beginnings: Mapping[int, int],
    bounds: Bounds,
    apply: bool,
    now_ms: int,
    dedupe_ms: int,
    progress: Callable[[str], None],
) -> HandOver:
    """The comparison before, then steps 1 to 5 of the module docstring, on the shadow
    connection ``conn``."""
    progress("rebuild: comparing with the live tables")
    async with conn.transaction():
        before = await compare(conn, schemas, bounds)
    progress(
        f"rebuild: {len(before):,} keys differ so far; handing over (the live fold waits for "
        "this transaction)"
    )
    started = time.monotonic()
    async with conn.transaction():
        locked = await _lock_live_offsets(conn, schemas.live, group, topic, beginnings)
        behind = {
            p: (offset, folder.positions[p])
            for p, offset in locked.items()
            if offset < folder.positions[p] and folder.positions[p] > folder.starts[p]
        }
        if behind:
            raise RebuildRefused(
                f"the live group {group} moved back while the rebuild ran (a reset?): "
                f"(stored, rebuilt) per partition {behind}; run the rebuild again"
            )
        folder.touched = set()
        await folder.fold_to(locked)
        await recheck(conn, folder.touched, before)
        folder.touched = None
        differences = await compare(conn, schemas, bounds, restricted=True)
        swapped = None
        if apply:
            swapped = await swap(conn, schemas, bounds, now_ms=now_ms, dedupe_ms=dedupe_ms)
    return HandOver(locked, differences, swapped, time.monotonic() - started)
