"""The official Node SDK records usage, cancels some of it and reads the totals back, unchanged.

The real aggregator folds the events, so the summaries the script polls for are the end-to-end
result: HTTP, Kafka, the fold into PostgreSQL, and the summaries query.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import AccountFactory
from tests.fixtures.node_sdk import needs_node, run_node_script

pytestmark = pytest.mark.integration


@needs_node
async def test_node_sdk_meter_events_adjustments_and_summaries(
    ingest_url: str, make_account: AccountFactory, aggregator: None
) -> None:
    started_s = int(time.time())
    report = await run_node_script(
        "meter_events.mjs", ingest_url, (await make_account()).secret_key
    )

    assert report["v1Event"] == {
        "object": "billing.meter_event",
        "identifier": "node-v1",
        "timestamp": report["v1Event"]["timestamp"],
        "payload": {"stripe_customer_id": "cus_node", "value": "25"},
    }
    assert started_s - 120 <= report["v1Event"]["timestamp"] <= started_s
    v2 = report["v2Event"]
    assert (v2["object"], v2["identifier"]) == ("v2.billing.meter_event", "node-v2")
    assert v2["timestamp"] == v2["sentTimestamp"]  # RFC 3339 with milliseconds, as sent

    # 25 + 5 + 1000 + 100 before the cancels; the cancelled 1000 and 100 leave 30.
    assert report["totalBeforeCancel"] == [1130.0]
    assert report["v1Adjustment"] == {
        "object": "billing.meter_event_adjustment",
        "status": "pending",
        "identifier": "node-v1-cancelled",
    }
    v2_adjustment = report["v2Adjustment"]
    assert v2_adjustment["object"] == "v2.billing.meter_event_adjustment"
    assert (v2_adjustment["status"], v2_adjustment["identifier"]) == (
        "pending",
        "node-v2-cancelled",
    )
    assert v2_adjustment["id"].startswith("mtr_event_adj_")
    [summary] = report["summary"]
    assert summary["id"].startswith("mtrusg_")
    assert summary == {
        "id": summary["id"],
        "object": "billing.meter_event_summary",
        "meter": report["meterId"],
        "livemode": False,
        "aggregated_value": 30.0,
        "start_time": report["range"]["startTime"],
        "end_time": report["range"]["endTime"],
    }
    # Hourly windows hold the same 30, split wherever the events straddle an hour.
    assert report["hourlyTotal"] == 30.0
    assert set(report["hourlyWindows"]) == {3600}
    assert report["noMeter"] == {"type": "StripeInvalidRequestError", "status": 400,
                                 "code": "no_meter"}  # fmt: skip
