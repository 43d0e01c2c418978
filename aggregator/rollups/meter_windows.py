"""Which meters pre-aggregate: ``event_time_window`` per meter id, as the aggregator needs it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import cast

from meterflow.store.pg import Conn
from meterflow.windows import TimeWindow


class MeterWindows:
    """A per-process cache of each meter's window.

    A meter's ``event_time_window`` is fixed at creation (the update endpoint refuses it), so an
    answer once read never goes stale and needs no expiry. An id with no meter row is treated as
    a raw meter and looked up again next time.
    """

    def __init__(self) -> None:
        self._known: dict[str, TimeWindow | None] = {}

    async def resolve(
        self, conn: Conn, meter_ids: Iterable[str]
    ) -> Mapping[str, TimeWindow | None]:
        missing = set(meter_ids).difference(self._known)
        if missing:
            rows = await conn.fetch(
                "SELECT id, event_time_window FROM meters WHERE id = ANY($1::text[])",
                sorted(missing),
            )
            for row in rows:
                self._known[row["id"]] = cast(TimeWindow | None, row["event_time_window"])
        return self._known
