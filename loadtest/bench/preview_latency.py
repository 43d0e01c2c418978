"""Invoice preview latency and freshness, with a month of usage behind the preview.

One account has five ``sum`` meters, each with a metered price, and three customers:

- ``month``: a subscription started 27 days ago, whose meters hold about 1,000,000 events each
  in the current period, 23 per minute over every minute of it (written straight into the
  minute rollups, as the fold would have left them, so the load takes seconds);
- ``day``: the same, started one day ago: the same rows per minute, over a 1-day period;
- ``probe``: a fresh subscription; each freshness probe sends one event for it and polls the
  preview until the amount includes it.

``month`` also holds a credit grant, and its live credit balance summary (which rates the open
period's usage to know what the grant would cover) is timed beside the previews.

Previews of ``month`` and ``day`` alternate, and freshness probes run beside them, while the
caller drives background stream load; the ratio of the two previews' latencies shows how a
preview's cost grows with the length of its period.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from loadtest.bench.api import BenchApi
from loadtest.latency import LatencyHistogram
from meterflow.store.accounts import NewAccount

METERS = 5
EVENTS_PER_MINUTE = 23  # about 1,000,000 a month
_DAY_S = 86_400
_PERIOD_DAYS = {"month": 27, "day": 1}
_POLL_S = 0.02
_PROBE_TIMEOUT_S = 10.0


async def _provision(api: BenchApi, now_s: int) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """Meters, prices, customers and subscriptions; returns (meter ids, customer by name,
    period start by name)."""
    meters: list[str] = []
    prices: list[str] = []
    for n in range(METERS):
        meter = await api.post(
            "/v1/billing/meters",
            {
                "display_name": f"preview {n}",
                "event_name": f"preview_{n}",
                "default_aggregation[formula]": "sum",
            },
        )
        meters.append(meter["id"])
        price = await api.post(
            "/v1/prices",
            {
                "currency": "usd",
                "unit_amount_decimal": "0.001",
                "recurring[interval]": "month",
                "recurring[usage_type]": "metered",
                "recurring[meter]": meter["id"],
                "product_data[name]": f"preview {n}",
            },
        )
        prices.append(price["id"])
    customers: dict[str, str] = {}
    starts: dict[str, int] = {}
    for name in ("month", "day", "probe"):
        customers[name] = (await api.post("/v1/customers", {"name": name}))["id"]
        start = now_s - _PERIOD_DAYS.get(name, 0) * _DAY_S
        form = {"customer": customers[name]} | {
            f"items[{i}][price]": p for i, p in enumerate(prices)
        }
        if name in _PERIOD_DAYS:
            form["backdate_start_date"] = str(start)
        subscription = await api.post("/v1/subscriptions", form)
        starts[name] = subscription["items"]["data"][0]["current_period_start"]
    return meters, customers, starts


async def _preload(
    database_url: str,
    account_id: str,
    *,
    meters: list[str],
    customers: dict[str, str],
    starts: dict[str, int],
    now_s: int,
) -> int:
    """Minute rollups for every minute of each backdated period; returns the rows written."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = 0
        for name in _PERIOD_DAYS:
            first = starts[name] - starts[name] % 60
            status = await conn.execute(
                """INSERT INTO rollups_minute (account_id, livemode, meter_id, customer,
                       minute_ts, value_sum, event_count, last_value, last_received_ms,
                       last_receipt_batch, last_receipt_index)
                   SELECT $1, false, m, $2, t, $5::int, $5::int, 1, t * 1000, 'bench-preload', 0
                   FROM unnest($3::text[]) AS m,
                        generate_series($4::bigint, $6::bigint - 60, 60) AS t""",
                account_id,
                customers[name],
                meters,
                first,
                EVENTS_PER_MINUTE,
                now_s - now_s % 60,
            )
            rows += int(status.rpartition(" ")[2])
        # The hours of those minutes, as the fold keeps them beside the minutes.
        await conn.execute(
            """INSERT INTO rollups_hour
               SELECT account_id, livemode, meter_id, customer, minute_ts - minute_ts % 3600,
                      sum(value_sum), sum(event_count), 1, max(last_received_ms),
                      'bench-preload', 0
               FROM rollups_minute WHERE account_id = $1
               GROUP BY account_id, livemode, meter_id, customer, minute_ts - minute_ts % 3600""",
            account_id,
        )
        return rows
    finally:
        await conn.close()


async def measure_previews(
    base_url: str, database_url: str, account: NewAccount, duration_s: float
) -> dict[str, Any]:
    """Preview latency for a month-long and a day-long period, and preview freshness."""
    api = BenchApi(base_url, account.secret_key)
    try:
        now_s = int(time.time())
        meters, customers, starts = await _provision(api, now_s)
        preloaded = await _preload(
            database_url,
            account.account_id,
            meters=meters,
            customers=customers,
            starts=starts,
            now_s=now_s,
        )
        await api.post(
            "/v1/billing/credit_grants",
            {
                "customer": customers["month"],
                "amount[type]": "monetary",
                "amount[monetary][currency]": "usd",
                "amount[monetary][value]": "100000",
                "applicability_config[scope][price_type]": "metered",
            },
        )
        summary_params = {
            "customer": customers["month"],
            "filter[type]": "applicability_scope",
            "filter[applicability_scope][price_type]": "metered",
        }
        latency = {name: LatencyHistogram() for name in _PERIOD_DAYS}
        summary = LatencyHistogram()
        freshness = LatencyHistogram()
        deadline = time.monotonic() + duration_s

        async def preview_loop() -> None:
            while time.monotonic() < deadline:
                for name in _PERIOD_DAYS:
                    started = time.perf_counter()
                    await api.post("/v1/invoices/create_preview", {"customer": customers[name]})
                    latency[name].record_s(time.perf_counter() - started)
                started = time.perf_counter()
                await api.get("/v1/billing/credit_balance_summary", summary_params)
                summary.record_s(time.perf_counter() - started)

        async def probe_loop() -> tuple[int, int]:
            probes = missing = 0
            while time.monotonic() < deadline:
                if await _probe(api, customers["probe"], probes, freshness):
                    probes += 1
                else:
                    missing += 1
            return probes, missing

        _, (probe, missing) = await asyncio.gather(preview_loop(), probe_loop())
        return {
            "meters": METERS,
            "preloaded_minute_rows": preloaded,
            "events_per_meter": {
                name: (now_s - starts[name]) // 60 * EVENTS_PER_MINUTE for name in _PERIOD_DAYS
            },
            "latency_ms": {name: h.summary_ms() for name, h in latency.items()},
            "previews": {name: h.count for name, h in latency.items()},
            "credit_summary_latency_ms": summary.summary_ms(),
            "credit_summaries": summary.count,
            "freshness_ms": freshness.summary_ms(),
            "probes": probe,
            "missing": missing,
        }
    finally:
        await api.close()


async def _probe(api: BenchApi, customer: str, n: int, freshness: LatencyHistogram) -> bool:
    """Send one event worth 1,000 units (1 cent more on the preview) and wait until the preview
    shows it; record the time from just before sending."""
    started = time.perf_counter()
    await api.post(
        "/v1/billing/meter_events",
        {
            "event_name": f"preview_{n % METERS}",
            "identifier": f"preview-probe-{n}",
            "payload[stripe_customer_id]": customer,
            "payload[value]": "1000",
        },
    )
    while time.perf_counter() - started < _PROBE_TIMEOUT_S:
        preview = await api.post("/v1/invoices/create_preview", {"customer": customer})
        if preview["amount_due"] >= n + 1:
            freshness.record_s(time.perf_counter() - started)
            return True
        await asyncio.sleep(_POLL_S)
    return False
