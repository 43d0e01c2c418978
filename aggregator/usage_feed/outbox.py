"""The usage-change feed written by each fold: which (meter, customer) usage changed, and over
which event times, so downstream consumers (alerts) re-read only what moved."""

from __future__ import annotations

from collections.abc import Iterable

from meterflow.store.pg import Conn
from meterflow.usage.keys import UsageKey


class UsageChanges:
    """Accumulates, per (meter, customer) within one batch, the event-time span touched and the
    latest receipt time of what touched it."""

    def __init__(self) -> None:
        self.spans: dict[UsageKey, tuple[int, int]] = {}
        self.last_received_ms: dict[UsageKey, int] = {}

    def touch(self, key: UsageKey, event_ts: int, received_ms: int) -> None:
        span = self.spans.get(key)
        if span is None:
            self.spans[key] = (event_ts, event_ts)
        else:
            self.spans[key] = (min(span[0], event_ts), max(span[1], event_ts))
        self.last_received_ms[key] = max(received_ms, self.last_received_ms.get(key, received_ms))

    def touch_all(self, touched: Iterable[tuple[UsageKey, int, int]]) -> None:
        for key, event_ts, received_ms in touched:
            self.touch(key, event_ts, received_ms)


async def record_usage_changes(conn: Conn, changes: UsageChanges) -> None:
    """Append the batch's changes to ``usage_changes`` (inside the fold's transaction)."""
    if not changes.spans:
        return
    keys = list(changes.spans)
    await conn.execute(
        """INSERT INTO usage_changes
               (account_id, livemode, meter_id, customer, first_event_ts, last_event_ts,
                last_received_ms)
           SELECT * FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[], $5::bigint[],
                                $6::bigint[], $7::bigint[])""",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
        [changes.spans[k][0] for k in keys],
        [changes.spans[k][1] for k in keys],
        [changes.last_received_ms[k] for k in keys],
    )
