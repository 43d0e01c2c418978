"""Event summaries end to end: HTTP events -> Kafka -> aggregator -> PostgreSQL -> summaries API."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import AccountFactory
from tests.fixtures.meter_events import wait_until

pytestmark = pytest.mark.integration

HOUR = 3600
DAY = 86_400


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _meter(http: httpx.AsyncClient, key: str, formula: str) -> str:
    response = await http.post(
        "/v1/billing/meters",
        data={
            "display_name": formula,
            "event_name": f"usage_{formula}",
            "default_aggregation[formula]": formula,
        },
        headers=_auth(key),
    )
    assert response.status_code == 200, response.text
    meter_id: str = response.json()["id"]
    return meter_id


async def _summaries(
    http: httpx.AsyncClient, key: str, meter: str, **params: str | int
) -> dict[str, Any]:
    response = await http.get(
        f"/v1/billing/meters/{meter}/event_summaries", params=params, headers=_auth(key)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_summaries_for_every_formula_grouping_and_page(
    http: httpx.AsyncClient, make_account: AccountFactory, aggregator: None, database_url: str
) -> None:
    key = (await make_account()).secret_key
    today = int(time.time()) // DAY * DAY
    base = today - 2 * DAY  # two UTC days ago, safely inside the 35-day window
    # (offset from base, value): two events in hour 0 of day 0, one in hour 5, one on day 1.
    history = [(60, "5"), (120, "7"), (5 * HOUR + 30, "-2"), (DAY + 10, "1.5")]
    meters = {f: await _meter(http, key, f) for f in ("sum", "count", "last")}
    for formula in meters:
        for n, (offset, value) in enumerate(history):
            response = await http.post(
                "/v1/billing/meter_events",
                data={
                    "event_name": f"usage_{formula}",
                    "payload[stripe_customer_id]": "cus_A",
                    "payload[value]": value,
                    "timestamp": str(base + offset),
                    "identifier": f"{formula}-{n}",
                },
                headers=_auth(key),
            )
            assert response.status_code == 200, response.text

    async def all_visible() -> bool:
        # Every meter's events, not one meter's: the three meters' events fold independently.
        conn = await asyncpg.connect(database_url)
        try:
            folded = await conn.fetchval("SELECT count(*) FROM event_identifiers")
        finally:
            await conn.close()
        return bool(folded == len(history) * len(meters))

    await wait_until(all_visible, 30, "events to be folded")

    whole_range: dict[str, str | int] = {
        "customer": "cus_A",
        "start_time": base,
        "end_time": base + 2 * DAY,
    }
    expected_whole = {"sum": 11.5, "count": 4.0, "last": 1.5}
    for formula, meter in meters.items():
        body = await _summaries(http, key, meter, **whole_range)
        assert body["url"] == f"/v1/billing/meters/{meter}/event_summaries"
        [summary] = body["data"]
        assert summary["object"] == "billing.meter_event_summary"
        assert (summary["start_time"], summary["end_time"]) == (base, base + 2 * DAY)
        assert summary["aggregated_value"] == expected_whole[formula], formula
        assert summary["meter"] == meter

    # Hourly buckets of day 0, newest first; empty hours are omitted.
    hourly = await _summaries(
        http,
        key,
        meters["sum"],
        customer="cus_A",
        start_time=base,
        end_time=base + DAY,
        value_grouping_window="hour",
    )
    assert [(s["start_time"] - base, s["aggregated_value"]) for s in hourly["data"]] == [
        (5 * HOUR, -2.0),
        (0, 12.0),
    ]
    last_hourly = await _summaries(
        http,
        key,
        meters["last"],
        customer="cus_A",
        start_time=base,
        end_time=base + DAY,
        value_grouping_window="hour",
    )
    assert [s["aggregated_value"] for s in last_hourly["data"]] == [-2.0, 7.0]

    # Daily buckets paginated one at a time.
    first = await _summaries(
        http,
        key,
        meters["count"],
        customer="cus_A",
        start_time=base,
        end_time=base + 2 * DAY,
        value_grouping_window="day",
        limit=1,
    )
    assert ([s["aggregated_value"] for s in first["data"]], first["has_more"]) == ([1.0], True)
    second = await _summaries(
        http,
        key,
        meters["count"],
        customer="cus_A",
        start_time=base,
        end_time=base + 2 * DAY,
        value_grouping_window="day",
        limit=1,
        starting_after=first["data"][0]["id"],
    )
    assert ([s["aggregated_value"] for s in second["data"]], second["has_more"]) == ([3.0], False)
    back = await _summaries(
        http,
        key,
        meters["count"],
        customer="cus_A",
        start_time=base,
        end_time=base + 2 * DAY,
        value_grouping_window="day",
        limit=1,
        ending_before=second["data"][0]["id"],
    )
    assert [s["id"] for s in back["data"]] == [first["data"][0]["id"]]

    # A minute-aligned sub-range, and a customer with no usage.
    minute = await _summaries(
        http, key, meters["sum"], customer="cus_A", start_time=base + 60, end_time=base + 120
    )
    assert minute["data"][0]["aggregated_value"] == 5.0
    nobody = await _summaries(http, key, meters["sum"], **{**whole_range, "customer": "cus_B"})
    assert nobody["data"][0]["aggregated_value"] == 0.0


async def test_summary_errors(http: httpx.AsyncClient, make_account: AccountFactory) -> None:
    key = (await make_account()).secret_key
    other = (await make_account("other")).secret_key
    meter = await _meter(http, key, "sum")
    url = f"/v1/billing/meters/{meter}/event_summaries"
    ok: dict[str, str | int] = {"customer": "c", "start_time": 1717200000, "end_time": 1717203600}
    cases: list[tuple[dict[str, str | int], int, str]] = [
        ({**ok, "start_time": 1717200001}, 400, "start_time"),
        ({**ok, "end_time": 1717200000}, 400, "end_time"),
        ({**ok, "value_grouping_window": "day"}, 400, "end_time"),
        ({"start_time": 1717200000, "end_time": 1717203600}, 400, "customer"),
    ]
    for params, status, param in cases:
        response = await http.get(url, params=params, headers=_auth(key))
        assert response.status_code == status, response.text
        assert response.json()["error"]["param"] == param
    missing = await http.get(url, params=ok, headers=_auth(other))
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "resource_missing")
