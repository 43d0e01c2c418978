"""Credit balance alert create parameters (``alert_type=credit_balance_threshold``), decoded from
the form and JSON bodies clients send."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import pytest

from ingest.alerts.credit_params import NewCreditBalanceAlert
from ingest.alerts.params import parse_new_alert
from ingest.edge.errors import InvalidRequest
from ingest.edge.forms import decode_urlencoded

CREDIT = {
    "alert_type": "credit_balance_threshold",
    "title": "Credits low",
    "credit_balance_threshold[lte][balance_type]": "monetary",
    "credit_balance_threshold[lte][monetary][currency]": "usd",
    "credit_balance_threshold[lte][monetary][value]": "500",
    "credit_balance_threshold[filters][0][type]": "customer",
    "credit_balance_threshold[filters][0][customer]": "cus_1",
}


def _form(fields: Mapping[str, str | None]) -> dict[str, Any]:
    """The decoded form of ``fields``; a None value leaves the field out."""
    pairs = [(k, v) for k, v in fields.items() if v is not None]
    return decode_urlencoded(urlencode(pairs).encode())


def test_form_and_json_bodies() -> None:
    expected = NewCreditBalanceAlert(title="Credits low", customer="cus_1", currency="usd", lte=500)
    assert parse_new_alert(_form(CREDIT)) == expected
    as_json = {
        "alert_type": "credit_balance_threshold",
        "title": "Credits low",
        "credit_balance_threshold": {
            "lte": {"balance_type": "monetary", "monetary": {"currency": "USD", "value": 500}},
            "filters": [{"type": "customer", "customer": "cus_1"}],
        },
    }
    assert parse_new_alert(as_json) == expected  # the currency is lower-cased, as for prices
    zero = parse_new_alert(_form({**CREDIT, "credit_balance_threshold[lte][monetary][value]": "0"}))
    assert zero == NewCreditBalanceAlert("Credits low", "cus_1", "usd", 0)  # credits gone


_LTE = "credit_balance_threshold[lte]"
_FILTERS = "credit_balance_threshold[filters]"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        # The balance: only monetary, in a three-letter currency, a whole number >= 0.
        ({f"{_LTE}[balance_type]": "custom_pricing_unit"}, f"{_LTE}[balance_type]"),
        ({f"{_LTE}[balance_type]": "credits"}, f"{_LTE}[balance_type]"),
        ({f"{_LTE}[balance_type]": None}, f"{_LTE}[balance_type]"),
        ({f"{_LTE}[monetary][currency]": "usdollar"}, f"{_LTE}[monetary][currency]"),
        ({f"{_LTE}[monetary][currency]": "u$d"}, f"{_LTE}[monetary][currency]"),
        ({f"{_LTE}[monetary][currency]": "xyz"}, f"{_LTE}[monetary][currency]"),  # not ISO 4217
        ({f"{_LTE}[monetary][currency]": None}, f"{_LTE}[monetary][currency]"),
        ({f"{_LTE}[monetary][value]": "-1"}, f"{_LTE}[monetary][value]"),
        ({f"{_LTE}[monetary][value]": "1.5"}, f"{_LTE}[monetary][value]"),
        ({f"{_LTE}[monetary][value]": ""}, f"{_LTE}[monetary][value]"),
        ({f"{_LTE}[monetary][value]": "9223372036854775808"}, f"{_LTE}[monetary][value]"),
        ({f"{_LTE}[monetary][value]": None}, f"{_LTE}[monetary][value]"),
        ({f"{_LTE}[monetary][currency]": None, f"{_LTE}[monetary][value]": None},
         f"{_LTE}[monetary]"),
        ({f"{_LTE}[monetary][colour]": "red"}, f"{_LTE}[monetary][colour]"),
        ({f"{_LTE}[custom_pricing_unit][id]": "cpu_1"}, f"{_LTE}[custom_pricing_unit]"),
        # The customer: exactly one filter, of type customer.
        ({f"{_FILTERS}[0][type]": None, f"{_FILTERS}[0][customer]": None}, _FILTERS),
        ({f"{_FILTERS}[1][type]": "customer", f"{_FILTERS}[1][customer]": "cus_2"}, _FILTERS),
        ({f"{_FILTERS}[0][type]": "tenant"}, f"{_FILTERS}[0][type]"),
        ({f"{_FILTERS}[0][customer]": None}, f"{_FILTERS}[0][customer]"),
        ({f"{_FILTERS}[0][customer]": "cus\x01"}, f"{_FILTERS}[0][customer]"),
        ({f"{_FILTERS}[0][customer]": "c" * 256}, f"{_FILTERS}[0][customer]"),
        ({f"{_FILTERS}[0][credit_grants][x]": "y"}, f"{_FILTERS}[0][credit_grants]"),
        # Usage alert parameters do not mix in.
        ({"usage_threshold[gte]": "5"}, "usage_threshold"),
        ({"usage_threshold_config[gte]": "5"}, "usage_threshold_config"),
        ({"filter[customer]": "cus_1"}, "filter"),
        ({"expand[]": "usage_threshold.meter"}, "expand"),
        ({"credit_balance_threshold[recurrence]": "one_time"},
         "credit_balance_threshold[recurrence]"),
        ({"title": None}, "title"),
        ({"surprise": "1"}, "surprise"),
    ],
)  # fmt: skip
def test_bad_input_names_the_parameter(change: dict[str, str | None], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_new_alert(_form({**CREDIT, **change}))
    assert exc.value.param == param
    assert exc.value.status == 400
    assert exc.value.message


def test_no_threshold_at_all() -> None:
    fields = {k: v for k, v in CREDIT.items() if not k.startswith("credit_balance_threshold")}
    with pytest.raises(InvalidRequest) as exc:
        parse_new_alert(_form(fields))
    assert exc.value.param == "credit_balance_threshold"


def test_the_errors_say_what_to_do() -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_new_alert(_form({**CREDIT, f"{_LTE}[balance_type]": "custom_pricing_unit"}))
    assert "only monetary" in exc.value.message
    with pytest.raises(InvalidRequest) as exc:
        parse_new_alert(_form({**CREDIT, "usage_threshold[gte]": "5"}))
    assert "credit_balance_threshold[lte]" in exc.value.message
    with pytest.raises(InvalidRequest) as exc:
        parse_new_alert(_form({**CREDIT, f"{_LTE}[monetary][value]": "-1"}))
    assert exc.value.code == "parameter_invalid_integer"
