"""End to end: events and cancels sent over HTTP, folded by the real aggregator into rollups.

Shows the division of labour: once the aggregator has folded an event, ingest's synchronous
duplicate check and cancel lookup see it; before that, duplicates are the aggregator's to drop.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import httpx
import pytest

from tests.conftest import AccountFactory
from tests.fixtures.meter_events import customer_totals, wait_until

pytestmark = pytest.mark.integration


async def _identifier_folded(database_url: str, identifier: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        found = await conn.fetchval(
            """SELECT 1 FROM event_identifiers i JOIN event_series s USING (series_id)
               WHERE i.digest = event_digest(s.account_id, s.livemode, $1)""",
            identifier,
        )
    finally:
        await conn.close()
    return found is not None


async def test_events_fold_then_duplicates_and_cancels_are_seen(
    http: httpx.AsyncClient, make_account: AccountFactory, database_url: str, aggregator: None
) -> None:
    key = (await make_account()).secret_key
    headers = {"Authorization": f"Bearer {key}"}
    meter = await http.post(
        "/v1/billing/meters",
        data={
            "display_name": "Tokens",
            "event_name": "tokens",
            "default_aggregation[formula]": "sum",
        },
        headers=headers,
    )
    assert meter.status_code == 200, meter.text
    url = "/v1/billing/meter_events"

    def event(identifier: str, value: str) -> dict[str, str]:
        return {
            "event_name": "tokens",
            "identifier": identifier,
            "payload[stripe_customer_id]": "cus_e2e",
            "payload[value]": value,
        }

    # Same identifier twice before folding: both accepted here, counted once downstream.
    for body in (event("a", "25"), event("a", "25"), event("b", "5")):
        assert (await http.post(url, data=body, headers=headers)).status_code == 200

    async def folded() -> bool:
        return await _identifier_folded(database_url, "a") and await _identifier_folded(
            database_url, "b"
        )

    await wait_until(folded, 30, "events a and b folded")
    assert (await customer_totals(database_url))["cus_e2e"] == (Decimal(30), 2)

    late_duplicate = await http.post(url, data=event("a", "25"), headers=headers)
    assert late_duplicate.status_code == 400
    assert late_duplicate.json()["error"]["code"] == "duplicate_meter_event"

    cancel = await http.post(
        "/v2/billing/meter_event_adjustments",
        json={"event_name": "tokens", "type": "cancel", "cancel": {"identifier": "a"}},
        headers=headers,
    )
    assert cancel.status_code == 200, cancel.text

    async def cancelled() -> bool:
        return (await customer_totals(database_url))["cus_e2e"] == (Decimal(5), 1)

    await wait_until(cancelled, 30, "the cancel of event a folded")
