"""Billing alerts in PostgreSQL, always scoped to one account and mode.

Archived alerts are kept (their firings refer to them) but are invisible here: no read or status
change finds them, so archiving cannot be undone.

A credit balance alert's creation and reactivation also ask the evaluator to evaluate its
customer (a row in ``credit_alert_rechecks``), since no ledger change or usage may come soon.
That row is written before the alert's own row is locked: the evaluator's sweep holds recheck
rows while it waits for alert rows, so the opposite order could deadlock with it.
"""

from __future__ import annotations

import asyncpg

from ingest.alerts.credit_params import NewCreditBalanceAlert
from ingest.alerts.params import NewAlert
from ingest.billing.owned_rows import owned_row
from ingest.edge.auth import Principal
from ingest.edge.list_pages import PageRequest, fetch_page
from meterflow.alerts import ALERT_COLUMNS, AlertStatus, AnyAlert, any_alert_from_row
from meterflow.ids import object_id
from meterflow.store.pg import Conn

MAX_ALERTS_PER_METER_CUSTOMER = 25
MAX_CREDIT_ALERTS_PER_CUSTOMER = 25
# A fetch_page filter (column expression = value): archived alerts are left out of lists.
_VISIBLE = "(status <> 'archived')"


class MeterNotFound(Exception):
    """No meter of the caller's account and mode has the id."""


class MeterInactive(Exception):
    """The meter exists but is deactivated."""


class AlertLimitReached(Exception):
    """The (meter, customer) already has the most alerts it may have."""


class CustomerNotFound(Exception):
    """No customer of the caller's account and mode has the id (or it was deleted)."""


def _alert(row: asyncpg.Record) -> AnyAlert:
    return any_alert_from_row(dict(row))


async def _request_recheck(
    conn: Conn, account_id: str, livemode: bool, customer: str | None
) -> None:
    """Ask the evaluator's sweep to evaluate the customer's credit alerts at once."""
    if customer is None:
        return
    await conn.execute(
        """INSERT INTO credit_alert_rechecks (account_id, livemode, customer_id, due_s)
           VALUES ($1, $2, $3, 0)
           ON CONFLICT (account_id, livemode, customer_id, due_s) DO UPDATE SET due_s = 0""",
        account_id,
        livemode,
        customer,
    )


class AlertStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, who: Principal, new: NewAlert, now_s: int) -> AnyAlert:
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

    async def create_credit(
        self, who: Principal, new: NewCreditBalanceAlert, now_s: int
    ) -> AnyAlert:
        """Insert an active, armed credit balance alert, or raise if the customer or the limit
        forbids it.

        1. Lock the customer's row (it must exist, not deleted). Concurrent creates for one
           customer queue here, so the count in step 2 cannot be raced past the limit.
        2. Count the customer's credit balance alerts that are not archived.
        3. Insert the alert and its state (armed), and ask for an evaluation: one already at or
           below its value fires within a sweep of the evaluator.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            customer = await owned_row(
                conn, who, table="customers", columns="id", object_id=new.customer,
                condition="NOT deleted", lock=True,
            )  # fmt: skip
            if customer is None:
                raise CustomerNotFound(new.customer)
            existing = await conn.fetchval(
                """SELECT count(*) FROM billing_alerts
                   WHERE account_id = $1 AND livemode = $2 AND customer = $3
                     AND alert_type = 'credit_balance_threshold' AND status <> 'archived'""",
                who.account_id,
                who.livemode,
                new.customer,
            )
            if existing >= MAX_CREDIT_ALERTS_PER_CUSTOMER:
                raise AlertLimitReached(new.customer)
            row = await conn.fetchrow(
                f"""INSERT INTO billing_alerts (id, account_id, livemode, alert_type, title,
                        customer, lte_currency, lte_value, created)
                    VALUES ($1, $2, $3, 'credit_balance_threshold', $4, $5, $6, $7, $8)
                    RETURNING {ALERT_COLUMNS}""",
                object_id("alrt", livemode=who.livemode),
                who.account_id,
                who.livemode,
                new.title,
                new.customer,
                new.currency,
                new.lte,
                now_s,
            )
            assert row is not None  # noqa: S101 - INSERT … RETURNING always yields the row
            await conn.execute("INSERT INTO credit_alert_states (alert_id) VALUES ($1)", row["id"])
            await _request_recheck(conn, who.account_id, who.livemode, new.customer)
        return _alert(row)

    async def get(self, who: Principal, alert_id: str) -> AnyAlert | None:
        """The alert, unless it is unknown, another account's, or archived."""
        row = await self._pool.fetchrow(
            f"""SELECT {ALERT_COLUMNS} FROM billing_alerts
                WHERE id = $1 AND account_id = $2 AND livemode = $3 AND status <> 'archived'""",
            alert_id,
            who.account_id,
            who.livemode,
        )
        return None if row is None else _alert(row)

    async def set_status(
        self, who: Principal, alert_id: str, status: AlertStatus
    ) -> AnyAlert | None:
        """Activate, deactivate or archive; None if the alert is not there (or already archived).
        Activating a credit balance alert asks for an evaluation of its customer."""
        async with self._pool.acquire() as conn, conn.transaction():
            if status == "active":
                customer = await conn.fetchval(
                    """SELECT customer FROM billing_alerts
                       WHERE id = $1 AND account_id = $2 AND livemode = $3
                         AND alert_type = 'credit_balance_threshold' AND status = 'inactive'""",
                    alert_id,
                    who.account_id,
                    who.livemode,
                )
                await _request_recheck(conn, who.account_id, who.livemode, customer)
            row = await conn.fetchrow(
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
        self,
        who: Principal,
        page: PageRequest,
        *,
        alert_type: str | None,
        meter_id: str | None,
        customer: str | None,
    ) -> tuple[list[AnyAlert], bool] | None:
        """Newest first: visible alerts, and whether more follow (None: unknown cursor)."""
        filters: dict[str, object] = {_VISIBLE: True}
        if alert_type is not None:
            filters["alert_type"] = alert_type
        if meter_id is not None:
            filters["meter_id"] = meter_id
        if customer is not None:
            filters["customer"] = customer
        found = await fetch_page(
            self._pool, who, page, table="billing_alerts", columns=ALERT_COLUMNS, filters=filters
        )
        if found is None:
            return None
        rows, has_more = found
        return [_alert(r) for r in rows], has_more
