"""Reading meters by event name for the tools that validate events outside ingest (re-drives of
rejected events, imports): every meter of an account and mode, in one query."""

from __future__ import annotations

from meterflow.meters import Meter
from meterflow.store.pg import Conn

METER_COLUMNS = (
    "seq, id, livemode, event_name, display_name, formula, customer_key, value_key, "
    "event_time_window, status, created, updated, deactivated_at"
)


async def meters_by_event_name(conn: Conn, account_id: str, livemode: bool) -> dict[str, Meter]:
    """The account's meters in one mode, by ``event_name`` (unique per account and mode)."""
    rows = await conn.fetch(
        f"SELECT {METER_COLUMNS} FROM meters WHERE account_id = $1 AND livemode = $2",
        account_id,
        livemode,
    )
    return {row["event_name"]: Meter(**dict(row)) for row in rows}
