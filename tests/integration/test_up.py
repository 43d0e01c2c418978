"""`meterflow up` with nothing configured: starts PostgreSQL and Kafka, serves, stops cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.launcher import meterflow_up, port_closed, stack_env, stack_ports
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


async def test_up_starts_everything_survives_restart_and_stops(tmp_path: Path) -> None:
    ports = stack_ports()
    env = stack_env(tmp_path / "data", ports)
    log = tmp_path / "up.log"

    async with meterflow_up(env, log) as stack, httpx.AsyncClient(base_url=stack.url) as http:
        created = await http.post(
            "/v1/billing/meters",
            auth=(stack.key, ""),
            data={
                "display_name": "Alpaca AI tokens",
                "event_name": "alpaca_ai_tokens",
                "default_aggregation[formula]": "sum",
            },
        )
        assert created.status_code == 200, created.text
        meter_id = created.json()["id"]
        first_key = stack.key
        now = int(time.time())
        sent = await http.post(
            "/v1/billing/meter_events",
            auth=(stack.key, ""),
            data={
                "event_name": "alpaca_ai_tokens",
                "payload[stripe_customer_id]": "cus_1",
                "payload[value]": "25",
                "timestamp": str(now),
            },
        )
        assert sent.status_code == 200, sent.text
        window: dict[str, str | int] = {
            "customer": "cus_1",
            "start_time": now // 60 * 60,
            "end_time": now // 60 * 60 + 60,
        }

        async def folded() -> bool:
            summary = await http.get(
                f"/v1/billing/meters/{meter_id}/event_summaries",
                params=window,
                auth=(stack.key, ""),
            )
            return bool(summary.json()["data"][0]["aggregated_value"] == 25.0)

        await wait_until(folded, 30, "the event to show in summaries")
        metrics = (await http.get("/metrics")).text
        assert "meterflow_http_requests_total" in metrics

    for name, port in ports.items():
        assert port_closed(port), f"{name} port still open after stop"

    # Second start on the same data: the meter and the first key are still there.
    async with meterflow_up(env, log) as stack, httpx.AsyncClient(base_url=stack.url) as http:
        assert stack.key != first_key
        for key in (first_key, stack.key):
            fetched = await http.get(f"/v1/billing/meters/{meter_id}", auth=(key, ""))
            assert fetched.status_code == 200, fetched.text
            assert fetched.json()["display_name"] == "Alpaca AI tokens"
