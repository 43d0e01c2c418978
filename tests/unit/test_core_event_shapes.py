"""The v2 core event shapes, as listed and as delivered: Stripe's spec has ``context``, ``reason``
and ``related_object`` optional and not nullable, so a field without a value is left out."""

from __future__ import annotations

import orjson

from aggregator.webhooks.core_events import CoreEvent, thin_notification
from ingest.core_events.api import render_event
from ingest.core_events.store import StoredCoreEvent

METER = {"id": "mtr_a", "type": "billing.meter", "url": "/v1/billing/meters/mtr_a"}
DATA = {"developer_message_summary": "There is 1 invalid event"}
ENVELOPE = {"id", "object", "type", "created", "livemode"}


def _stored(related: dict[str, str] | None) -> StoredCoreEvent:
    return StoredCoreEvent(
        seq=1,
        id="evt_test_1",
        type="v1.billing.meter.no_meter_found",
        created_ms=1_724_878_455_051,
        livemode=False,
        related_object=None if related is None else orjson.dumps(related).decode(),
        data=orjson.dumps(DATA).decode(),
    )


def _core(related: dict[str, str] | None) -> CoreEvent:
    return CoreEvent(
        id="evt_test_1",
        account_id="acct_1",
        livemode=True,
        type="v1.billing.meter.error_report_triggered",
        created_ms=1_724_878_455_051,
        related_object=related,
        data=DATA,
        source_key="k",
    )


def test_a_listed_event_leaves_out_the_fields_without_value() -> None:
    body = orjson.loads(orjson.dumps(render_event(_stored(None))))
    assert set(body) == ENVELOPE | {"data"}
    assert body["object"] == "v2.core.event"
    assert body["created"] == "2024-08-28T20:54:15.051Z"
    assert body["data"] == DATA


def test_a_listed_event_about_an_object_names_it() -> None:
    body = orjson.loads(orjson.dumps(render_event(_stored(METER))))
    assert set(body) == ENVELOPE | {"data", "related_object"}
    assert body["related_object"] == METER


def test_a_thin_notification_has_no_null_fields() -> None:
    assert thin_notification(_core(None)) == {
        "id": "evt_test_1",
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "created": "2024-08-28T20:54:15.051Z",
        "livemode": True,
    }
    with_meter = thin_notification(_core(METER))
    assert with_meter["related_object"] == METER
    assert None not in with_meter.values()
