"""The official Stripe SDKs, pointed at meterflow, manage meters unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import stripe

from tests.conftest import AccountFactory
from tests.fixtures.node_sdk import needs_node, run_node_script

pytestmark = pytest.mark.integration


async def test_python_sdk_meter_lifecycle(ingest_url: str, make_account: AccountFactory) -> None:
    key = (await make_account()).secret_key
    # The SDK is synchronous: run it in a worker thread so the event loop stays free.
    report = await _in_thread(_python_sdk_calls, key, ingest_url)
    assert report["created_object"] == "billing.meter"
    assert report["retrieved_display_name"] == "Renamed tokens"
    assert report["listed_ids"] == [report["second_id"], report["first_id"]]
    assert report["page_ids"] == [report["second_id"]]
    assert report["has_more"] is True
    assert report["auto_paged"] == 2
    assert report["deactivated_status"] == "inactive"
    assert report["reactivated_status"] == "active"
    assert report["missing_error"] == ("InvalidRequestError", 404, "resource_missing")
    assert report["bad_key_error"] == "AuthenticationError"
    assert report["invalid_param"] == ("InvalidRequestError", 400, "parameter_unknown")


async def _in_thread(
    func: Callable[[str, str], dict[str, object]], *args: str
) -> dict[str, object]:
    return await asyncio.to_thread(func, *args)


def _python_sdk_calls(key: str, base_url: str) -> dict[str, object]:
    client = stripe.StripeClient(key, base_addresses={"api": base_url}, max_network_retries=0)
    meters = client.v1.billing.meters
    first = meters.create(
        {
            "display_name": "Alpaca AI tokens",
            "event_name": "alpaca_ai_tokens",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    second = meters.create(
        {
            "display_name": "GB stored",
            "event_name": "gb_stored",
            "default_aggregation": {"formula": "last"},
            "event_time_window": "hour",
        }
    )
    meters.update(first.id, {"display_name": "Renamed tokens"})
    retrieved = meters.retrieve(first.id)
    listed = meters.list()
    page = meters.list({"limit": 1})
    auto_paged = sum(1 for _ in meters.list({"limit": 1}).auto_paging_iter())
    deactivated = meters.deactivate(first.id)
    reactivated = meters.reactivate(first.id)
    report: dict[str, object] = {
        "created_object": first.object,
        "first_id": first.id,
        "second_id": second.id,
        "retrieved_display_name": retrieved.display_name,
        "listed_ids": [m.id for m in listed.data],
        "page_ids": [m.id for m in page.data],
        "has_more": page.has_more,
        "auto_paged": auto_paged,
        "deactivated_status": deactivated.status,
        "reactivated_status": reactivated.status,
    }
    try:
        meters.retrieve("mtr_test_missing")
    except stripe.InvalidRequestError as exc:
        report["missing_error"] = (type(exc).__name__, exc.http_status, exc.code)
    try:
        meters.update(first.id, {"event_name": "renamed"})  # type: ignore[arg-type]
    except stripe.InvalidRequestError as exc:
        report["invalid_param"] = (type(exc).__name__, exc.http_status, exc.code)
    bad = stripe.StripeClient(
        "sk_test_" + "x" * 48, base_addresses={"api": base_url}, max_network_retries=0
    )
    try:
        bad.v1.billing.meters.list()
    except stripe.AuthenticationError as exc:
        report["bad_key_error"] = type(exc).__name__
    return report


@needs_node
async def test_node_sdk_meter_lifecycle(ingest_url: str, make_account: AccountFactory) -> None:
    key = (await make_account()).secret_key
    report = await run_node_script("meters.mjs", ingest_url, key)
    assert report["createdObject"] == "billing.meter"
    assert report["retrievedDisplayName"] == "Renamed tokens"
    assert report["listedIds"] == [report["secondId"], report["firstId"]]
    assert report["pageHasMore"] is True
    assert report["autoPaged"] == 2
    assert (report["deactivated"], report["reactivated"]) == ("inactive", "active")
    assert report["missing"] == {"type": "StripeInvalidRequestError", "status": 404,
                                 "code": "resource_missing"}  # fmt: skip
    assert report["badKey"] == "StripeAuthenticationError"
