"""Reading the aggregator's dedupe table, ``event_identifiers``, from the HTTP edge.

A row appears once the aggregator folded the event, normally well under a second after ingest
accepted it. Ingest only reads: the duplicate check here is best effort (it catches retries of
events already folded); exactly-once is the aggregator's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import asyncpg

from ingest.edge.auth import Principal


@dataclass(frozen=True, slots=True)
class ProcessedEvent:
    """An event the aggregator folded, with the event name of the meter it went to."""

    identifier: str
    meter_id: str
    event_name: str | None  # None only if the meter row is gone
    customer: str
    received_ms: int


class ProcessedEvents(Protocol):
    async def exists(self, who: Principal, identifier: str) -> bool: ...

    async def find(self, who: Principal, identifier: str) -> ProcessedEvent | None: ...


class PgProcessedEvents:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def exists(self, who: Principal, identifier: str) -> bool:
        found = await self._pool.fetchval(
            "SELECT 1 FROM event_identifiers WHERE digest = event_digest($1, $2, $3)",
            who.account_id,
            who.livemode,
            identifier,
        )
        return found is not None

    async def find(self, who: Principal, identifier: str) -> ProcessedEvent | None:
        row = await self._pool.fetchrow(
            """SELECT s.meter_id, m.event_name, s.customer, e.received_ms
               FROM event_identifiers e
               JOIN event_series s USING (series_id)
               LEFT JOIN meters m ON m.id = s.meter_id
               WHERE e.digest = event_digest($1, $2, $3)""",
            who.account_id,
            who.livemode,
            identifier,
        )
        if row is None:
            return None
        return ProcessedEvent(
            identifier=identifier,
            meter_id=row["meter_id"],
            event_name=row["event_name"],
            customer=row["customer"],
            received_ms=row["received_ms"],
        )
