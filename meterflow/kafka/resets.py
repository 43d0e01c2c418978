"""Moving a consumer group back to a point in time, safely.

A group's offsets live in PostgreSQL (``consumer_offsets``); its consumers seek to them on every
assignment, and a batch that does not start where they say is rolled back (the fence,
:mod:`meterflow.kafka.offsets`). A reset therefore only rewrites those rows, in one transaction:
running consumers see their next batch fenced, seek to the new offsets and read the records
again. That is harmless only where reading a record twice changes nothing:

* the rollup fold drops every identifier it folded in the last 24 hours at least (the dedupe
  set), and a cancel applied before finds nothing left to cancel: a reset up to 24 hours back
  changes no rollup;
* the alert evaluator records each firing under a unique (alert, customer, period) key: a reset
  fires nothing twice;
* the error-report consumer adds rejections to tallies: reading them again would report them
  again, so it is never reset.

A reset never moves a partition forward (that would skip records not folded yet), and leaves a
partition the group has folded nothing from alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meterflow.errors import MeterflowError
from meterflow.store.pg import Conn


class ResetRefused(MeterflowError):
    """The group cannot be reset as asked without changing what it produced."""


@dataclass(frozen=True, slots=True)
class ResetPolicy:
    """Whether, and how far back, re-reading the group's records is harmless."""

    group: str
    max_age_s: int | None  # how far back a reset may go; None: as far as the topic holds
    refused: str | None = None  # why it may not be reset at all


def check_reset(policy: ResetPolicy, to_time_ms: int, now_ms: int) -> None:
    if policy.refused is not None:
        raise ResetRefused(f"group {policy.group} cannot be reset: {policy.refused}")
    if policy.max_age_s is not None and to_time_ms < now_ms - policy.max_age_s * 1000:
        hours = policy.max_age_s / 3600
        raise ResetRefused(
            f"group {policy.group} can be reset at most {hours:g} hours back: records older "
            "than that may no longer be recognised as already folded, and would count twice"
        )


def plan_reset(stored: Mapping[int, int], at_time: Mapping[int, int]) -> dict[int, int]:
    """The partitions that move, and where to: back to ``at_time``'s offset, never forward."""
    return {
        p: at_time[p]
        for p, offset in sorted(stored.items())
        if p in at_time and at_time[p] < offset
    }


async def apply_reset(
    conn: Conn, group: str, topic: str, at_time: Mapping[int, int]
) -> dict[int, tuple[int, int]]:
    """Move the group's stored offsets back to ``at_time`` in one transaction (the rows locked,
    so a batch committing meanwhile is ordered before or after it); returns
    ``{partition: (from, to)}``."""
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT partition, next_offset FROM consumer_offsets
               WHERE group_id = $1 AND topic = $2 ORDER BY partition FOR UPDATE""",
            group,
            topic,
        )
        stored = {r["partition"]: r["next_offset"] for r in rows}
        moves = plan_reset(stored, at_time)
        await conn.executemany(
            """UPDATE consumer_offsets SET next_offset = $4, updated_at = now()
               WHERE group_id = $1 AND topic = $2 AND partition = $3""",
            [(group, topic, p, offset) for p, offset in moves.items()],
        )
    return {p: (stored[p], offset) for p, offset in moves.items()}
