"""Meters in PostgreSQL, always scoped to one account and mode.

Every change announces its v1 event (``billing.meter.created``, ``updated``, ``deactivated``,
``reactivated``) in the change's own transaction, so a meter never changes without its event.
"""

from __future__ import annotations

import asyncpg

from ingest.edge.auth import Principal
from ingest.edge.list_pages import PageRequest, fetch_page
from meterflow.billing.announce import announce
from meterflow.ids import object_id
from meterflow.meters import (
    METER_CREATED,
    METER_DEACTIVATED,
    METER_REACTIVATED,
    METER_UPDATED,
    Meter,
    MeterStatus,
    NewMeter,
)
from meterflow.store.pg import Conn

_COLUMNS = (
    "seq, id, livemode, event_name, display_name, formula, customer_key, value_key, "
    "event_time_window, status, created, updated, deactivated_at"
)


class EventNameTaken(Exception):
    """Another meter of the account and mode already uses the event name."""


def _meter(row: asyncpg.Record) -> Meter:
    return Meter(**dict(row))


async def _locked(conn: Conn, who: Principal, meter_id: str) -> Meter | None:
    """The meter of ``who``, locked until the transaction ends."""
    row = await conn.fetchrow(
        f"""SELECT {_COLUMNS} FROM meters WHERE id = $1 AND account_id = $2 AND livemode = $3
            FOR UPDATE""",
        meter_id,
        who.account_id,
        who.livemode,
    )
    return None if row is None else _meter(row)


class MeterStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, who: Principal, new: NewMeter, now_s: int) -> Meter:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"""INSERT INTO meters (id, account_id, livemode, event_name, display_name,
                            formula, customer_key, value_key, event_time_window, created, updated)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
                        RETURNING {_COLUMNS}""",
                    object_id("mtr", livemode=who.livemode),
                    who.account_id,
                    who.livemode,
                    new.event_name,
                    new.display_name,
                    new.formula,
                    new.customer_key,
                    new.value_key,
                    new.event_time_window,
                    now_s,
                )
                assert row is not None  # noqa: S101 - INSERT … RETURNING always yields the row
                meter = _meter(row)
                await announce(conn, who, METER_CREATED, meter.to_stripe(), now_s)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "meters_event_name_unique":
                raise EventNameTaken(new.event_name) from exc
            raise
        return meter

    async def get(self, who: Principal, meter_id: str) -> Meter | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM meters WHERE id = $1 AND account_id = $2 AND livemode = $3",
            meter_id,
            who.account_id,
            who.livemode,
        )
        return None if row is None else _meter(row)

    async def by_event_name(self, who: Principal, event_name: str) -> Meter | None:
        """The meter (active or not) that events named ``event_name`` belong to."""
        row = await self._pool.fetchrow(
            f"""SELECT {_COLUMNS} FROM meters
                WHERE account_id = $1 AND livemode = $2 AND event_name = $3""",
            who.account_id,
            who.livemode,
            event_name,
        )
        return None if row is None else _meter(row)

    async def rename(
        self, who: Principal, meter_id: str, display_name: str, now_s: int
    ) -> Meter | None:
        """Rename; ``billing.meter.updated`` names the fields that changed, as they were."""
        async with self._pool.acquire() as conn, conn.transaction():
            before = await _locked(conn, who, meter_id)
            if before is None:
                return None
            row = await conn.fetchrow(
                f"""UPDATE meters SET display_name = $2, updated = $3
                    WHERE id = $1 RETURNING {_COLUMNS}""",
                meter_id,
                display_name,
                now_s,
            )
            assert row is not None  # noqa: S101 - locked above
            meter = _meter(row)
            await announce(
                conn, who, METER_UPDATED, meter.to_stripe(), now_s, before=before.to_stripe()
            )
        return meter

    async def set_status(
        self, who: Principal, meter_id: str, status: MeterStatus, now_s: int
    ) -> Meter | None:
        """Deactivate or reactivate; a no-op transition leaves the object untouched and
        announces nothing."""
        async with self._pool.acquire() as conn, conn.transaction():
            before = await _locked(conn, who, meter_id)
            if before is None:
                return None
            if before.status == status:
                return before
            row = await conn.fetchrow(
                f"""UPDATE meters SET status = $2, updated = $3, deactivated_at = $4
                    WHERE id = $1 RETURNING {_COLUMNS}""",
                meter_id,
                status,
                now_s,
                None if status == "active" else now_s,
            )
            assert row is not None  # noqa: S101 - locked above
            meter = _meter(row)
            event_type = METER_REACTIVATED if status == "active" else METER_DEACTIVATED
            await announce(conn, who, event_type, meter.to_stripe(), now_s)
        return meter

    async def page(
        self, who: Principal, page: PageRequest, *, status: MeterStatus | None
    ) -> tuple[list[Meter], bool] | None:
        """Newest first: a page of meters, and whether more follow (None: unknown cursor)."""
        found = await fetch_page(
            self._pool, who, page, table="meters", columns=_COLUMNS,
            filters={"status": status} if status is not None else None,
        )  # fmt: skip
        if found is None:
            return None
        rows, has_more = found
        return [_meter(r) for r in rows], has_more
