"""Billing alert create and list parameters, decoded from the form bodies clients send."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import pytest

from ingest.alerts.params import NewAlert, parse_list_query, parse_new_alert
from ingest.edge.errors import InvalidRequest
from ingest.edge.forms import decode_urlencoded
from ingest.edge.params import Params

CURRENT = {
    "alert_type": "usage_threshold",
    "title": "Tokens over 1000",
    "usage_threshold[gte]": "1000",
    "usage_threshold[meter]": "mtr_test_1",
    "usage_threshold[recurrence]": "one_time",
}
LEGACY = {
    "alert_type": "usage_threshold",
    "title": "Tokens over 1000",
    "usage_threshold_config[gte]": "1000",
    "usage_threshold_config[meter]": "mtr_test_1",
    "usage_threshold_config[recurrence]": "one_time",
}
FILTER = {
    "usage_threshold[filters][0][type]": "customer",
    "usage_threshold[filters][0][customer]": "cus_1",
}


def _form(fields: Mapping[str, str | None]) -> dict[str, Any]:
    """The decoded form of ``fields``; a None value leaves the field out."""
    pairs = [(k, v) for k, v in fields.items() if v is not None]
    return decode_urlencoded(urlencode(pairs).encode())


def _usage(values: Mapping[str, Any]) -> NewAlert:
    alert = parse_new_alert(values)
    assert isinstance(alert, NewAlert)
    return alert


def _parse(fields: Mapping[str, str | None]) -> NewAlert:
    return _usage(_form(fields))


def test_current_shape_with_a_customer_filter() -> None:
    alert = _parse({**CURRENT, **FILTER, "expand[]": "usage_threshold.meter"})
    assert alert == NewAlert(
        title="Tokens over 1000",
        meter_id="mtr_test_1",
        gte=1000,
        recurrence="one_time",
        customer="cus_1",
        expand_meter=True,
        legacy_params=False,
    )
    assert alert.meter_param == "usage_threshold[meter]"


def test_current_shape_without_filters_watches_every_customer() -> None:
    alert = _parse({**CURRENT, "usage_threshold[recurrence]": "monthly"})
    assert (alert.customer, alert.recurrence, alert.expand_meter) == (None, "monthly", False)


def test_legacy_shape_with_a_top_level_filter() -> None:
    alert = _parse(
        {**LEGACY, "filter[customer]": "cus_9", "usage_threshold_config[recurrence]": "daily"}
    )
    assert (alert.customer, alert.gte, alert.recurrence, alert.legacy_params) == (
        "cus_9",
        1000,
        "daily",
        True,
    )
    assert alert.meter_param == "usage_threshold_config[meter]"
    assert _parse(LEGACY).customer is None


def test_json_bodies_take_integers_and_arrays() -> None:
    alert = _usage(
        {
            "alert_type": "usage_threshold",
            "title": "JSON",
            "usage_threshold": {
                "gte": 9223372036854775807,
                "meter": "mtr_test_1",
                "recurrence": "one_time",
                "filters": [{"type": "customer", "customer": "cus_json"}],
            },
            "expand": ["usage_threshold_config.meter"],
        }
    )
    assert (alert.gte, alert.customer, alert.expand_meter) == (2**63 - 1, "cus_json", True)
    assert parse_new_alert({**_form(CURRENT), "usage_threshold": {
        "gte": 5, "meter": "m", "recurrence": "one_time", "filters": []
    }}).customer is None  # fmt: skip


@pytest.mark.parametrize(
    ("change", "param"),
    [
        # The threshold: a whole number 1..2**63-1 in plain decimal digits.
        ({"usage_threshold[gte]": "-5"}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": "0"}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": "1.5"}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": "10.0"}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": "1e3"}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": ""}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": " 5"}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": "+5"}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": "0x10"}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": "١٢"}, "usage_threshold[gte]"),  # non-ASCII digits
        ({"usage_threshold[gte]": "9223372036854775808"}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": "9" * 5000}, "usage_threshold[gte]"),
        ({"usage_threshold[gte]": None}, "usage_threshold[gte]"),
        # The meter and the recurrence.
        ({"usage_threshold[meter]": None}, "usage_threshold[meter]"),
        ({"usage_threshold[meter]": ""}, "usage_threshold[meter]"),
        ({"usage_threshold[meter]": "m" * 256}, "usage_threshold[meter]"),
        ({"usage_threshold[meter]": "mtr\n1"}, "usage_threshold[meter]"),
        ({"usage_threshold[recurrence]": "weekly"}, "usage_threshold[recurrence]"),
        ({"usage_threshold[recurrence]": None}, "usage_threshold[recurrence]"),
        # The alert itself.
        ({"alert_type": "spend_threshold"}, "alert_type"),
        ({"alert_type": None}, "alert_type"),
        ({"credit_balance_threshold[lte][balance_type]": "monetary"},
         "credit_balance_threshold"),
        ({"title": None}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "t" * 257}, "title"),
        ({"title": "bell\x07"}, "title"),
        ({"colour": "red"}, "colour"),
        ({"usage_threshold[colour]": "red"}, "usage_threshold[colour]"),
        ({"expand[]": "customer"}, "expand"),
        # Filters: at most one, of type customer, with a well-formed customer id.
        (
            {
                **FILTER,
                "usage_threshold[filters][1][type]": "customer",
                "usage_threshold[filters][1][customer]": "cus_2",
            },
            "usage_threshold[filters]",
        ),
        ({**FILTER, "usage_threshold[filters][0][type]": "subscription"},
         "usage_threshold[filters][0][type]"),
        ({**FILTER, "usage_threshold[filters][0][type]": None},
         "usage_threshold[filters][0][type]"),
        ({**FILTER, "usage_threshold[filters][0][customer]": None},
         "usage_threshold[filters][0][customer]"),
        ({**FILTER, "usage_threshold[filters][0][customer]": ""},
         "usage_threshold[filters][0][customer]"),
        ({**FILTER, "usage_threshold[filters][0][customer]": "cus\x001"},
         "usage_threshold[filters][0][customer]"),
        ({**FILTER, "usage_threshold[filters][0][customer]": "cus_\t1"},
         "usage_threshold[filters][0][customer]"),
        ({**FILTER, "usage_threshold[filters][0][customer]": "c" * 501},
         "usage_threshold[filters][0][customer]"),
        ({**FILTER, "usage_threshold[filters][0][extra]": "x"},
         "usage_threshold[filters][0][extra]"),
        ({"usage_threshold[filters]": "cus_1"}, "usage_threshold[filters]"),
        # Mixing the shapes.
        ({"usage_threshold_config[gte]": "5"}, "usage_threshold_config"),
        ({"filter[customer]": "cus_1"}, "filter"),
        ({"usage_threshold[gte]": None, "usage_threshold[meter]": None,
          "usage_threshold[recurrence]": None}, "usage_threshold"),
    ],
)  # fmt: skip
def test_bad_current_shape_names_the_parameter(change: dict[str, str | None], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        _parse({**CURRENT, **change})
    assert exc.value.param == param
    assert exc.value.status == 400
    assert exc.value.message


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"usage_threshold_config[gte]": "-1"}, "usage_threshold_config[gte]"),
        ({"usage_threshold_config[gte]": "2.5"}, "usage_threshold_config[gte]"),
        ({"usage_threshold_config[meter]": None}, "usage_threshold_config[meter]"),
        ({"usage_threshold_config[recurrence]": "yearly"}, "usage_threshold_config[recurrence]"),
        ({"filter[subscription]": "sub_1"}, "filter[subscription]"),
        ({"filter[customer]": "cus_1", "filter[subscription_item]": "si_1"},
         "filter[subscription_item]"),
        ({"filter[customer]": "c" * 501}, "filter[customer]"),
        ({"filter[customer]": "cus\r1"}, "filter[customer]"),
        ({"filter[customer]": "cus_1", "usage_threshold[gte]": "5"}, "usage_threshold_config"),
        # A filter alone, without the threshold it belongs with.
        ({"usage_threshold_config[gte]": None, "usage_threshold_config[meter]": None,
          "usage_threshold_config[recurrence]": None, "filter[customer]": "cus_1"},
         "usage_threshold_config"),
    ],
)  # fmt: skip
def test_bad_legacy_shape_names_the_parameter(change: dict[str, str | None], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        _parse({**LEGACY, **change})
    assert exc.value.param == param


def test_subscription_filters_say_why() -> None:
    with pytest.raises(InvalidRequest) as exc:
        _parse({**LEGACY, "filter[subscription]": "sub_1"})
    assert "no subscriptions" in exc.value.message


def test_list_query_defaults_filters_and_expansion() -> None:
    query = parse_list_query(Params(_form({})))
    assert (
        query.page.limit, query.alert_type, query.meter_id, query.customer, query.expand_meter
    ) == (10, None, None, None, False)  # fmt: skip
    query = parse_list_query(
        Params(
            _form(
                {
                    "alert_type": "usage_threshold",
                    "meter": "mtr_test_1",
                    "limit": "3",
                    "starting_after": "alrt_x",
                    "expand[]": "data.usage_threshold.meter",
                }
            )
        )
    )
    assert (query.alert_type, query.meter_id, query.page.limit, query.expand_meter) == (
        "usage_threshold",
        "mtr_test_1",
        3,
        True,
    )
    assert query.page.cursor == ("starting_after", "alrt_x")
    query = parse_list_query(
        Params(_form({"alert_type": "credit_balance_threshold", "customer": "cus_1"}))
    )
    assert (query.alert_type, query.customer) == ("credit_balance_threshold", "cus_1")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"alert_type": "other"}, "alert_type"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"status": "active"}, "status"),
        ({"expand[]": "usage_threshold.meter"}, "expand"),
        ({"starting_after": "a", "ending_before": "b"}, "ending_before"),
    ],
)
def test_bad_list_query(fields: dict[str, str | None], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_list_query(Params(_form(fields)))
    assert exc.value.param == param
