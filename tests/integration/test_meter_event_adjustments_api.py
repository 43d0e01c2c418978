"""Meter event adjustments (cancels), v1 and v2, over real HTTP against Kafka and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from meterflow.records.meter_events import CancelRecord, partition_key
from tests.conftest import AccountFactory
from tests.fixtures.meter_events_http import (
    DAY_MS,
    EVENT_NAME,
    auth,
    create_meter,
    mark_processed,
    v1_error,
    v2_error,
)
from tests.fixtures.meter_events_topic import MeterEventsReader

pytestmark = pytest.mark.integration


async def test_cancel_adjustments(
    http: httpx.AsyncClient,
    make_account: AccountFactory,
    database_url: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    account = await make_account()
    headers = auth(account.secret_key)
    meter = await create_meter(http, account.secret_key)
    await create_meter(http, account.secret_key, event_name="other_event")
    now_ms = int(time.time() * 1000)
    await mark_processed(database_url, account.account_id, "fresh", meter["id"], "cus_7")
    await mark_processed(
        database_url, account.account_id, "old", meter["id"], received_ms=now_ms - DAY_MS - 60_000
    )
    v1 = "/v1/billing/meter_event_adjustments"
    v2 = "/v2/billing/meter_event_adjustments"

    def cancel(identifier: str, event_name: str = EVENT_NAME) -> dict[str, str]:
        return {"event_name": event_name, "type": "cancel", "cancel[identifier]": identifier}

    def cancel_v2(identifier: str, event_name: str = EVENT_NAME) -> dict[str, Any]:
        return {"event_name": event_name, "type": "cancel", "cancel": {"identifier": identifier}}

    unknown = v1_error(await http.post(v1, data=cancel("nope"), headers=headers), 404)
    assert (unknown["code"], unknown["param"]) == ("resource_missing", "cancel[identifier]")
    assert "processed" in unknown["message"]
    unknown_v2 = v2_error(await http.post(v2, json=cancel_v2("nope"), headers=headers), 404)
    assert unknown_v2["code"] == "not_found"
    wrong = await http.post(v1, data=cancel("fresh", "other_event"), headers=headers)
    assert v1_error(wrong, 400)["code"] == "invalid_cancel_configuration"
    wrong_v2 = await http.post(v2, json=cancel_v2("fresh", "other_event"), headers=headers)
    assert v2_error(wrong_v2, 400)["code"] == "invalid_cancel_configuration"
    expired = v1_error(await http.post(v1, data=cancel("old"), headers=headers), 400)
    assert expired["code"] == "cancel_window_expired"
    assert "24 hours" in expired["message"]
    expired_v2 = v2_error(await http.post(v2, json=cancel_v2("old"), headers=headers), 400)
    assert expired_v2["code"] == "cancel_window_expired"
    for form, param in (
        ({"event_name": EVENT_NAME, "cancel[identifier]": "fresh"}, "type"),
        (cancel("fresh") | {"type": "refund"}, "type"),
        ({"event_name": EVENT_NAME, "type": "cancel"}, "cancel"),
        ({"type": "cancel", "cancel[identifier]": "fresh"}, "event_name"),
    ):
        assert v1_error(await http.post(v1, data=form, headers=headers), 400)["param"] == param

    async with MeterEventsReader(kafka_bootstrap, topic_prefix) as topic:
        assert await topic.record_count() == 0
        ok = await http.post(v1, data=cancel("fresh"), headers=headers)
        assert ok.status_code == 200, ok.text
        assert ok.json() == {
            "object": "billing.meter_event_adjustment",
            "livemode": False,
            "status": "pending",
            "event_name": EVENT_NAME,
            "type": "cancel",
            "cancel": {"identifier": "fresh"},
        }
        ok_v2 = await http.post(v2, json=cancel_v2("fresh"), headers=headers)
        assert ok_v2.status_code == 200, ok_v2.text
        body = ok_v2.json()
        assert body["id"].startswith("mtr_event_adj_")
        assert body["created"].endswith("Z")
        assert {k: v for k, v in body.items() if k not in ("id", "created")} == {
            "object": "v2.billing.meter_event_adjustment",
            "cancel": {"identifier": "fresh"},
            "event_name": EVENT_NAME,
            "livemode": False,
            "status": "pending",
            "type": "cancel",
        }
        records = await topic.read_decoded(2)
    for key, record in records:
        assert key == partition_key(account.account_id, False, "cus_7")
        assert isinstance(record, CancelRecord)
        assert (record.meter_id, record.identifier, record.customer, record.event_name) == (
            meter["id"],
            "fresh",
            "cus_7",
            EVENT_NAME,
        )
        assert record.received_ms >= now_ms
