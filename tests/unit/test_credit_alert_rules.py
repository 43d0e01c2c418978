"""Credit balance alerts without I/O: what an evaluation decides, the alert object and its event."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.alerts.credit.rules import (
    AlertState,
    CreditFiring,
    Verdict,
    customers_of,
    judge,
)
from meterflow.alerts import (
    CreditBalanceAlert,
    alert_object,
    alert_triggered_event,
    any_alert_from_row,
)


def _alert(
    alert_id: str = "alrt_1", *, customer: str = "cus_1", currency: str = "usd", lte: int = 200
) -> CreditBalanceAlert:
    return CreditBalanceAlert(
        id=alert_id, account_id="acct_1", livemode=False, title="Low credits",
        customer=customer, currency=currency, lte=lte, status="active", created=1_700_000_000,
    )  # fmt: skip


KEY = ("acct_1", False, "cus_1")


@pytest.mark.parametrize(
    ("armed", "balance", "expected"),
    [
        (True, 201, Verdict()),  # above, armed: nothing to do
        (True, 200, Verdict([CreditFiring(_alert(), 4, 200)])),  # at the value: fires
        (True, 0, Verdict([CreditFiring(_alert(), 4, 0)])),
        (False, 150, Verdict()),  # still below, fired already: nothing until it rises
        (False, 200, Verdict()),
        (False, 201, Verdict(rearm=["alrt_1"])),  # risen above: armed again
    ],
)
def test_fires_at_or_below_while_armed_and_rearms_above(
    armed: bool, balance: int, expected: Verdict
) -> None:
    state = AlertState(_alert(), armed, firings=3)
    assert judge([state], {KEY: {"usd": balance, "eur": 10_000}}) == expected


def test_no_balance_in_the_currency_is_zero() -> None:
    states = [
        AlertState(_alert("alrt_eur", currency="eur", lte=0), armed=True, firings=0),
        AlertState(_alert("alrt_none", customer="cus_2", lte=5), armed=True, firings=0),
        AlertState(_alert("alrt_usd", lte=5), armed=True, firings=0),
    ]
    verdict = judge(states, {KEY: {"usd": 6}})
    assert [(f.alert.id, f.sequence, f.value) for f in verdict.firings] == [
        ("alrt_eur", 1, 0),
        ("alrt_none", 1, 0),
    ]


@given(
    st.lists(st.integers(min_value=0, max_value=1_000), min_size=1, max_size=40),
    st.integers(min_value=0, max_value=1_000),
)
def test_one_firing_per_drop_to_the_value(balances: list[int], lte: int) -> None:
    """Over any sequence of observed balances, the alert fires exactly once per run of
    observations at or below the value that follows one above it (or the start)."""
    alert = _alert(lte=lte)
    armed, firings, fired_values = True, 0, []
    for balance in balances:
        verdict = judge([AlertState(alert, armed, firings)], {KEY: {"usd": balance}})
        for firing in verdict.firings:
            assert firing.sequence == firings + 1
            firings, armed = firing.sequence, False
            fired_values.append(firing.value)
        if verdict.rearm:
            armed = True
    drops = [b for i, b in enumerate(balances) if b <= lte and (i == 0 or balances[i - 1] > lte)]
    assert fired_values == drops


def test_customers_of_a_batch_are_distinct_and_sorted() -> None:
    keys = [
        ("acct_2", False, "mtr_a", "cus_1"),
        ("acct_1", True, "mtr_a", "cus_1"),
        ("acct_1", True, "mtr_b", "cus_1"),
        ("acct_1", False, "mtr_a", "cus_1"),
    ]
    assert customers_of(keys) == [
        ("acct_1", False, "cus_1"),
        ("acct_1", True, "cus_1"),
        ("acct_2", False, "cus_1"),
    ]


CREDIT_THRESHOLD = {
    "filters": [{"customer": "cus_1", "type": "customer"}],
    "lte": {
        "balance_type": "monetary",
        "custom_pricing_unit": None,
        "monetary": {"currency": "usd", "value": 200},
    },
}


def test_the_alert_object_in_both_shapes() -> None:
    alert = _alert()
    common = {
        "id": "alrt_1", "object": "billing.alert", "alert_type": "credit_balance_threshold",
        "livemode": False, "status": "active", "title": "Low credits",
        "credit_balance_threshold": CREDIT_THRESHOLD,
    }  # fmt: skip
    assert alert_object(alert) == common | {"usage_threshold": None}
    assert alert_object(alert, legacy=True) == common | {
        "filter": {"customer": "cus_1", "subscription": None, "subscription_item": None},
        "usage_threshold_config": None,
    }


def test_rows_read_back_as_their_kind() -> None:
    row = {
        "id": "alrt_1", "account_id": "acct_1", "livemode": False,
        "alert_type": "credit_balance_threshold", "title": "Low credits", "meter_id": None,
        "customer": "cus_1", "gte": None, "recurrence": None, "status": "active",
        "created": 1_700_000_000, "lte_currency": "usd", "lte_value": 200,
    }  # fmt: skip
    assert any_alert_from_row(row) == _alert()


def test_the_triggered_event_carries_the_balance() -> None:
    event = alert_triggered_event(
        event_id="evt_1", alert=_alert(), customer="cus_1", value=150, created=1_700_000_100
    )
    assert event["type"] == "billing.alert.triggered"
    assert event["data"]["object"] == {
        "object": "billing.alert_triggered",
        "alert": alert_object(_alert()),
        "created": 1_700_000_100,
        "customer": "cus_1",
        "livemode": False,
        "value": 150,
    }
