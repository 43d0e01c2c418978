"""Credit grant parameters and state rules without I/O: create, update and summary filters, and
what a grant's state allows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ingest.billing.credits.params import (
    BalanceFilter,
    GrantChanges,
    parse_balance_filter,
    parse_grant_changes,
    parse_new_grant,
)
from ingest.billing.credits.rules import (
    check_expire,
    check_expiry_change,
    check_scope_prices,
    check_void,
    effective_times,
)
from ingest.edge.errors import ApiError, InvalidRequest, ResourceMissing
from ingest.edge.forms import decode_pairs
from ingest.edge.object_params import MetadataChange
from ingest.edge.params import Params
from meterflow.billing.objects.credit_grants import CreditGrant
from meterflow.billing.objects.prices import Price, Recurring
from meterflow.billing.prices import PriceTerms

NOW = 1_800_000_000
BASE = {
    "customer": "cus_1",
    "amount[type]": "monetary",
    "amount[monetary][currency]": "USD",
    "amount[monetary][value]": "1000",
    "applicability_config[scope][price_type]": "metered",
}


def form(**pairs: str) -> dict[str, Any]:
    return decode_pairs(list(pairs.items()))


def new_grant(**changes: str | None) -> dict[str, Any]:
    pairs = {k: v for k, v in (BASE | changes).items() if v is not None}
    return decode_pairs(list(pairs.items()))


def test_create_defaults_and_every_field() -> None:
    new = parse_new_grant(new_grant())
    assert (new.customer, new.currency, new.value, new.scope_prices) == ("cus_1", "usd", 1000, None)
    assert (new.category, new.priority, new.effective_at, new.expires_at, new.name) == (
        "paid",
        50,
        None,
        None,
        None,
    )
    full = parse_new_grant(
        new_grant(
            **{
                "applicability_config[scope][price_type]": None,
                "applicability_config[scope][prices][0][id]": "price_a",
                "applicability_config[scope][prices][1][id]": "price_b",
                "applicability_config[scope][prices][2][id]": "price_a",
                "category": "promotional",
                "priority": "0",
                "effective_at": str(NOW),
                "expires_at": str(NOW + 1),
                "name": "Welcome credits",
                "metadata[campaign]": "spring",
            }
        )
    )
    assert full.scope_prices == ("price_a", "price_b")
    assert full.scope_param == "applicability_config[scope][prices]"
    assert (full.category, full.priority, full.effective_at, full.expires_at) == (
        "promotional",
        0,
        NOW,
        NOW + 1,
    )
    assert (full.name, full.metadata) == ("Welcome credits", {"campaign": "spring"})
    # JSON bodies give the same.
    as_json = parse_new_grant(
        {
            "customer": "cus_1",
            "amount": {"type": "monetary", "monetary": {"currency": "eur", "value": 5}},
            "applicability_config": {"scope": {"prices": [{"id": "price_a"}]}},
        }
    )
    assert (as_json.currency, as_json.value, as_json.scope_prices) == ("eur", 5, ("price_a",))


@pytest.mark.parametrize(
    ("changes", "param", "code"),
    [
        ({"amount[monetary][value]": "0"}, "amount[monetary][value]", "parameter_invalid_integer"),
        ({"amount[monetary][value]": "-5"}, "amount[monetary][value]", "parameter_invalid_integer"),
        (
            {"amount[monetary][value]": "1.5"},
            "amount[monetary][value]",
            "parameter_invalid_integer",
        ),
        ({"amount[monetary][value]": None}, "amount[monetary][value]", "parameter_missing"),
        (
            {"amount[monetary][currency]": "dollars"},
            "amount[monetary][currency]",
            "string_too_long",
        ),
        ({"amount[monetary][currency]": "u1d"}, "amount[monetary][currency]", "parameter_invalid"),
        ({"amount[type]": "custom_pricing_unit"}, "amount[type]", "parameter_invalid"),
        ({"amount[type]": None}, "amount[type]", "parameter_missing"),
        (
            {"applicability_config[scope][prices][0][id]": "price_a"},
            "applicability_config[scope][prices]",
            "parameters_exclusive",
        ),
        (
            {"applicability_config[scope][price_type]": None},
            "applicability_config",
            "parameter_missing",
        ),
        (
            {"applicability_config[scope][price_type]": "licensed"},
            "applicability_config[scope][price_type]",
            "parameter_invalid",
        ),
        ({"category": "free"}, "category", "parameter_invalid"),
        ({"priority": "101"}, "priority", "parameter_invalid_integer"),
        ({"priority": "-1"}, "priority", "parameter_invalid_integer"),
        ({"name": "n" * 101}, "name", "string_too_long"),
        ({"customer": None}, "customer", "parameter_missing"),
        ({"effective_at": str(NOW), "expires_at": str(NOW)}, "expires_at", "parameter_invalid"),
        ({"effective_at": str(NOW + 9), "expires_at": str(NOW)}, "expires_at", "parameter_invalid"),
        ({"customer_account": "acct_1"}, "customer_account", "parameter_unknown"),
        ({"amount[monetary][cents]": "1"}, "amount[monetary][cents]", "parameter_unknown"),
    ],
)
def test_create_refuses(changes: dict[str, str | None], param: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_new_grant(new_grant(**changes))
    assert (refused.value.param, refused.value.code) == (param, code)


def test_an_empty_scope_is_refused() -> None:
    values = new_grant(**{"applicability_config[scope][price_type]": None})
    values["applicability_config"] = {"scope": {}}
    with pytest.raises(InvalidRequest) as refused:
        parse_new_grant(values)
    assert (refused.value.param, refused.value.code) == (
        "applicability_config[scope][price_type]",
        "parameter_missing",
    )


def test_scope_takes_at_most_twenty_prices() -> None:
    pairs = {f"applicability_config[scope][prices][{i}][id]": f"price_{i}" for i in range(20)}
    twenty = new_grant(**{"applicability_config[scope][price_type]": None} | pairs)
    assert len(parse_new_grant(twenty).scope_prices or ()) == 20
    pairs["applicability_config[scope][prices][20][id]"] = "price_20"
    with pytest.raises(InvalidRequest) as refused:
        parse_new_grant(new_grant(**{"applicability_config[scope][price_type]": None} | pairs))
    assert refused.value.param == "applicability_config[scope][prices]"


def test_update_sets_or_clears_the_expiry_and_changes_metadata() -> None:
    assert parse_grant_changes(form(expires_at=str(NOW))) == GrantChanges(expires_at=NOW)
    assert parse_grant_changes(form(expires_at="")) == GrantChanges(clear_expiry=True)
    assert parse_grant_changes(form(**{"metadata[a]": "1", "metadata[b]": ""})) == GrantChanges(
        metadata=MetadataChange({"a": "1"}, ["b"])
    )
    for refused in ({"name": "x"}, {"priority": "1"}, {"expires_at": "soon"}):
        with pytest.raises(InvalidRequest):
            parse_grant_changes(form(**refused))


def test_summary_filters() -> None:
    def parse(**pairs: str) -> BalanceFilter:
        return parse_balance_filter(Params(form(**pairs)["filter"], "filter"))

    assert (
        parse(
            **{
                "filter[type]": "applicability_scope",
                "filter[applicability_scope][price_type]": "metered",
            }
        )
        == BalanceFilter()
    )
    assert parse(
        **{
            "filter[type]": "applicability_scope",
            "filter[applicability_scope][prices][0][id]": "price_a",
        }
    ) == BalanceFilter(prices=("price_a",))
    assert parse(
        **{"filter[type]": "credit_grant", "filter[credit_grant]": "credgr_1"}
    ) == BalanceFilter(grant="credgr_1")
    refusals: list[tuple[dict[str, str], str | None]] = [
        ({"filter[type]": "credit_grant"}, "filter[credit_grant]"),
        ({"filter[type]": "applicability_scope"}, "filter[applicability_scope]"),
        ({"filter[type]": "everything", "filter[credit_grant]": "x"}, "filter[type]"),
        (
            {
                "filter[type]": "credit_grant",
                "filter[credit_grant]": "credgr_1",
                "filter[applicability_scope][price_type]": "metered",
            },
            "filter[applicability_scope]",
        ),
    ]
    for pairs, param in refusals:
        with pytest.raises(InvalidRequest) as refused:
            parse(**pairs)
        assert refused.value.param == param


def stored(**changes: Any) -> CreditGrant:
    values: dict[str, Any] = {
        "seq": 1,
        "id": "credgr_1",
        "livemode": False,
        "customer": "cus_1",
        "name": None,
        "category": "paid",
        "priority": 50,
        "currency": "usd",
        "amount": 1000,
        "scope_prices": None,
        "effective_at": NOW - 100,
        "expires_at": None,
        "voided_at": None,
        "metadata": {},
        "created": NOW - 100,
        "updated": NOW - 100,
    }
    return CreditGrant(**(values | changes))


def refuses(check: Any, *args: Any, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as refused:
        check(*args, **kwargs)
    return refused.value


def test_times_of_a_new_grant() -> None:
    assert effective_times(parse_new_grant(new_grant()), NOW) == (NOW, None)
    later = parse_new_grant(new_grant(effective_at=str(NOW + 50), expires_at=str(NOW + 60)))
    assert effective_times(later, NOW) == (NOW + 50, NOW + 60)
    past = parse_new_grant(new_grant(expires_at=str(NOW)))
    assert refuses(effective_times, past, NOW).param == "expires_at"


def price(price_id: str, *, usage: str | None, currency: str = "usd") -> Price:
    recurring = None if usage is None else Recurring("month", 1, usage, "mtr_1")  # type: ignore[arg-type]
    return Price(
        seq=1,
        id=price_id,
        livemode=False,
        product="prod_1",
        active=True,
        currency=currency,
        type="one_time" if recurring is None else "recurring",
        terms=PriceTerms.per_unit(Decimal(1), None),
        recurring=recurring,
        nickname=None,
        lookup_key=None,
        metadata={},
        created=0,
    )


def test_scope_prices_must_be_the_callers_metered_prices_in_the_grant_currency() -> None:
    new = parse_new_grant(
        new_grant(
            **{
                "applicability_config[scope][price_type]": None,
                "applicability_config[scope][prices][0][id]": "price_ok",
                "applicability_config[scope][prices][1][id]": "price_x",
            }
        )
    )
    ok = price("price_ok", usage="metered")
    check_scope_prices(new, {"price_ok": ok, "price_x": price("price_x", usage="metered")})
    param = "applicability_config[scope][prices][1][id]"
    for other, kind in [
        ({}, ResourceMissing),
        ({"price_x": price("price_x", usage="licensed")}, InvalidRequest),
        ({"price_x": price("price_x", usage=None)}, InvalidRequest),
        ({"price_x": price("price_x", usage="metered", currency="eur")}, InvalidRequest),
    ]:
        error = refuses(check_scope_prices, new, {"price_ok": ok} | other)
        assert (type(error), error.param) == (kind, param)


def test_what_a_grant_state_allows() -> None:
    live = stored()
    check_expire(live, NOW)
    check_void(live, applied=False)
    check_expiry_change(live, GrantChanges(expires_at=NOW + 1), NOW)
    check_expiry_change(live, GrantChanges(clear_expiry=True), NOW)
    assert "already expired" in refuses(check_expire, stored(expires_at=NOW), NOW).message
    assert "void it instead" in refuses(check_expire, stored(effective_at=NOW + 1), NOW).message
    assert (
        "already been voided" in refuses(check_void, stored(voided_at=NOW), applied=False).message
    )
    assert "applied" in refuses(check_void, live, applied=True).message
    # A new expiry must be in the future and after effective_at; an expired grant keeps its own.
    for changes, grant in [
        (GrantChanges(expires_at=NOW), live),
        (GrantChanges(expires_at=NOW + 5), stored(effective_at=NOW + 10)),
        (GrantChanges(clear_expiry=True), stored(expires_at=NOW - 1)),
    ]:
        assert refuses(check_expiry_change, grant, changes, NOW).param == "expires_at"
    check_expiry_change(stored(expires_at=NOW - 1), GrantChanges(), NOW)  # metadata only
