"""Billing alerts in PostgreSQL, always scoped to one account and mode.

Archived alerts are kept (their firings refer to them) but are invisible here: no read or status
change finds them, so archiving cannot be undone.
"""

from __future__ import annotations

import asyncpg

from ingest.alerts.params import NewAlert
from ingest.edge.auth import Principal
from ingest.edge.list_pages import PageRequest, fetch_page
from meterflow.alerts import ALERT_COLUMNS, Alert, AlertStatus, alert_from_row
from meterflow.ids import object_id

MAX_ALERTS_PER_METER_CUSTOMER = 25
# A fetch_page filter (column expression = value): archived alerts are left out of lists.
_VISIBLE = "(status <> 'archived')"


class MeterNotFound(Exception):
    """No meter of the caller's account and mode has the id."""


class MeterInactive(Exception):
    """The meter exists but is deactivated."""


class AlertLimitReached(Exception):
    """The (meter, customer) already has the most alerts it may have."""


def _alert(row: asyncpg.Record) -> Alert:
    return alert_from_row(dict(row))


class AlertStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, who: Principal, new: NewAlert, now_s: int) -> Alert:
        """Insert an active alert, or raise if the meter or the limit forbids it.

        1. Lock the meter row. Concurrent creates for one meter queue here, so the count in
           step 2 cannot be raced past the limit; the meter cannot be deactivated meanwhile.
        2. Count the (meter, customer)'s alerts that are not archived.
        3. Insert.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval(
                """SELECT status FROM meters
                   WHERE id = $1 AND account_id = $2 AND livemode = $3 FOR UPDATE""",
                new.meter_id,
                who.account_id,
                who.livemode,
            )
            if status is None:
                raise MeterNotFound(new.meter_id)
            if status != "active":
                raise MeterInactive(new.meter_id)
            existing = await conn.fetchval(
                """SELECT count(*) FROM billing_alerts
                   WHERE account_id = $1 AND livemode = $2 AND meter_id = $3
                     AND customer IS NOT DISTINCT FROM $4 AND status <> 'archived'""",
                who.account_id,
                who.livemode,
                new.meter_id,
                new.customer,
            )
            if existing >= MAX_ALERTS_PER_METER_CUSTOMER:
                raise AlertLimitReached(new.meter_id)
            row = await conn.fetchrow(
                f"""INSERT INTO billing_alerts (id, account_id, livemode, alert_type, title,
                        meter_id, customer, gte, recurrence, created)
                    VALUES ($1, $2, $3, 'usage_threshold', $4, $5, $6, $7, $8, $9)
                    RETURNING {ALERT_COLUMNS}""",
                object_id("alrt", livemode=who.livemode),
                who.account_id,
                who.livemode,
                new.title,
                new.meter_id,
                new.customer,
                new.gte,
                new.recurrence,
                now_s,
            )
        assert row is not None  # noqa: S101 - INSERT … RETURNING always yields the row
        return _alert(row)

    async def get(self, who: Principal, alert_id: str) -> Alert | None:
        """The alert, unless it is unknown, another account's, or archived."""
        row = await self._pool.fetchrow(
            f"""SELECT {ALERT_COLUMNS} FROM billing_alerts
                WHERE id = $1 AND account_id = $2 AND livemode = $3 AND status <> 'archived'""",
            alert_id,
            who.account_id,
            who.livemode,
        )
        return None if row is None else _alert(row)

    async def set_status(self, who: Principal, alert_id: str, status: AlertStatus) -> Alert | None:
        """Activate, deactivate or archive; None if the alert is not there (or already archived)."""
        row = await self._pool.fetchrow(
            f"""UPDATE billing_alerts SET status = $4
                WHERE id = $1 AND account_id = $2 AND livemode = $3 AND status <> 'archived'
                RETURNING {ALERT_COLUMNS}""",
            alert_id,
            who.account_id,
            who.livemode,
            status,
        )
        return None if row is None else _alert(row)

    async def page(
        self, who: Principal, page: PageRequest, *, alert_type: str | None, meter_id: str | None
    ) -> tuple[list[Alert], bool] | None:
        """Newest first: visible alerts, and whether more follow (None: unknown cursor)."""
        filters: dict[str, object] = {_VISIBLE: True}
        if alert_type is not None:
            filters["alert_type"] = alert_type
        if meter_id is not None:
            filters["meter_id"] = meter_id
        found = await fetch_page(
            self._pool, who, page, table="billing_alerts", columns=ALERT_COLUMNS, filters=filters
        )
        if found is None:
            return None
        rows, has_more = found
        return [_alert(r) for r in rows], has_more
