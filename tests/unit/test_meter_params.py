from typing import Any

import pytest

from ingest.edge.errors import InvalidRequest
from ingest.edge.params import Params
from ingest.meters.api import parse_new_meter, parse_update

BASE: dict[str, Any] = {
    "display_name": "Alpaca AI tokens",
    "event_name": "alpaca_ai_tokens",
    "default_aggregation": {"formula": "sum"},
}


def test_defaults_follow_stripe() -> None:
    meter = parse_new_meter(Params(BASE))
    assert (meter.customer_key, meter.value_key, meter.event_time_window) == (
        "stripe_customer_id",
        "value",
        None,
    )


def test_custom_keys_and_window() -> None:
    meter = parse_new_meter(
        Params(
            {
                **BASE,
                "customer_mapping": {"event_payload_key": "cust", "type": "by_id"},
                "value_settings": {"event_payload_key": "tokens"},
                "event_time_window": "hour",
            }
        )
    )
    assert (meter.customer_key, meter.value_key, meter.event_time_window) == (
        "cust",
        "tokens",
        "hour",
    )


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"default_aggregation": None}, "default_aggregation"),
        ({"default_aggregation": {}}, "default_aggregation[formula]"),
        ({"default_aggregation": {"formula": "max"}}, "default_aggregation[formula]"),
        ({"display_name": "x" * 251}, "display_name"),
        ({"event_name": "e" * 101}, "event_name"),
        ({"event_name": None}, "event_name"),
        ({"customer_mapping": {"type": "by_id"}}, "customer_mapping[event_payload_key]"),
        ({"customer_mapping": {"event_payload_key": "c"}}, "customer_mapping[type]"),
        ({"customer_mapping": {"event_payload_key": "c", "type": "x"}}, "customer_mapping[type]"),
        ({"value_settings": {"event_payload_key": "k" * 101}}, "value_settings[event_payload_key]"),
        ({"event_time_window": "week"}, "event_time_window"),
        ({"colour": "red"}, "colour"),
        ({"value_settings": "value"}, "value_settings"),
    ],
)
def test_create_errors_name_the_parameter(change: dict[str, Any], param: str) -> None:
    values = {**BASE, **change}
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(InvalidRequest) as exc:
        parse_new_meter(Params(values))
    assert exc.value.param == param


def test_update_accepts_display_name_only() -> None:
    assert parse_update(Params({"display_name": "New"})) == "New"
    assert parse_update(Params({})) is None
    for key in ("event_name", "default_aggregation", "event_time_window", "nonsense"):
        with pytest.raises(InvalidRequest) as exc:
            parse_update(Params({key: "x"}))
        assert exc.value.param == key
