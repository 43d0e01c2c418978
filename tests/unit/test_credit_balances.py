"""Credit balances without I/O: which grants count, what pending invoices would take (balances
carried from one invoice to the next), and the per-currency summary, with property tests."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from meterflow.billing.balances import (
    CurrencyBalance,
    PendingInvoice,
    counted,
    credits_taken,
    summarize,
)
from meterflow.billing.credits import CreditableLine, GrantTerms

NOW = 1_000_000
PERIOD_END = NOW + 100


def grant(grant_id: str, balance: int = 100, **changes: object) -> GrantTerms:
    base = GrantTerms(
        id=grant_id,
        currency="usd",
        category="paid",
        priority=50,
        effective_at=0,
        expires_at=None,
        created=0,
        scope_prices=None,
        voided=False,
        balance=balance,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def line(amount: int, price: str = "price_a", currency: str = "usd") -> CreditableLine:
    return CreditableLine(price, True, currency, amount)


def invoice(*lines: CreditableLine, period_end: int = PERIOD_END) -> PendingInvoice:
    return PendingInvoice(tuple(lines), period_end)


def test_counted_by_grant_and_by_prices() -> None:
    everything = grant("all")
    scoped = grant("scoped", scope_prices=frozenset({"price_a", "price_b"}))
    other = grant("other", scope_prices=frozenset({"price_c"}))
    assert all(counted(g, only=None, prices=None) for g in (everything, scoped, other))
    assert [
        g.id for g in (everything, scoped, other) if counted(g, only="scoped", prices=None)
    ] == ["scoped"]
    # A grant for every metered price can pay for any price; a scoped one for its own.
    wanted = frozenset({"price_b", "price_z"})
    assert [g.id for g in (everything, scoped, other) if counted(g, only=None, prices=wanted)] == [
        "all",
        "scoped",
    ]
    assert not counted(scoped, only="scoped", prices=frozenset({"price_c"}))


def test_invoices_take_in_order_and_carry_balances_from_one_to_the_next() -> None:
    first, second = grant("first", 100, priority=0), grant("second", 100, priority=1)
    taken = credits_taken([first, second], [invoice(line(70)), invoice(line(50))], NOW)
    # The first invoice takes 70 of `first`; the second takes its last 30, then 20 of `second`.
    assert taken == {"first": 100, "second": 20}


def test_expired_voided_out_of_scope_and_ineligible_grants_give_nothing() -> None:
    grants = [
        grant("expired", expires_at=NOW),
        grant("voided", voided=True),
        grant("scoped", scope_prices=frozenset({"price_b"})),
        grant("euro", currency="eur"),
        grant("later", effective_at=PERIOD_END + 1),
        grant("expires_in_period", expires_at=PERIOD_END),
    ]
    assert credits_taken(grants, [invoice(line(500))], NOW) == {}
    licensed = CreditableLine("price_a", False, "usd", 500)
    assert credits_taken([grant("g")], [invoice(licensed)], NOW) == {}


def test_summary_per_currency_with_expired_and_tied_up_credits() -> None:
    grants = [
        grant("a", 300),
        grant("b", 200, expires_at=NOW - 1),  # past expiry, not yet debited
        grant("c", 50, currency="eur"),
        grant("pending", 0, effective_at=NOW + 10),  # its credit is not in effect yet
    ]
    assert summarize(grants, {"a": 120}, NOW) == [
        CurrencyBalance("eur", 50, 50),
        CurrencyBalance("usd", 500, 180),
    ]
    assert summarize([], {}, NOW) == []


def test_available_is_never_negative() -> None:
    assert summarize([grant("a", 100)], {"a": 150}, NOW) == [CurrencyBalance("usd", 100, 0)]
    assert summarize([grant("a", -5)], {}, NOW) == [CurrencyBalance("usd", -5, 0)]


_grants = st.lists(
    st.builds(
        grant,
        grant_id=st.sampled_from(["g0", "g1", "g2", "g3", "g4"]),
        balance=st.integers(0, 500),
        priority=st.integers(0, 3),
        currency=st.sampled_from(["usd", "eur"]),
        expires_at=st.none() | st.integers(NOW - 5, PERIOD_END + 5),
        scope_prices=st.none() | st.frozensets(st.sampled_from(["price_a", "price_b"]), min_size=1),
        voided=st.booleans(),
    ),
    max_size=5,
    unique_by=lambda g: g.id,
)
_invoice_lines = st.lists(
    st.lists(
        st.builds(
            line,
            amount=st.integers(0, 400),
            price=st.sampled_from(["price_a", "price_b"]),
            currency=st.sampled_from(["usd", "eur"]),
        ),
        max_size=3,
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(grants=_grants, invoices=_invoice_lines)
def test_balances_add_up_over_grants_and_stay_within_the_ledger(
    grants: list[GrantTerms], invoices: list[list[CreditableLine]]
) -> None:
    pending = [invoice(*lines) for lines in invoices]
    taken = credits_taken(grants, pending, NOW)
    # Nothing takes more than a grant has, and nothing from a grant that cannot pay.
    for g in grants:
        assert 0 <= taken.get(g.id, 0) <= max(g.balance, 0)
        if g.voided or (g.expires_at is not None and g.expires_at <= NOW):
            assert g.id not in taken
    whole = summarize(grants, taken, NOW)
    for balance in whole:
        assert 0 <= balance.available <= max(balance.ledger, 0)
    # The summary of every grant is the sum of the summaries of each grant alone.
    by_currency: dict[str, tuple[int, int]] = {}
    for g in grants:
        for b in summarize([g], taken, NOW):
            ledger, available = by_currency.get(b.currency, (0, 0))
            by_currency[b.currency] = (ledger + b.ledger, available + b.available)
    assert {b.currency: (b.ledger, b.available) for b in whole} == by_currency
    # Total credits taken never exceed the invoices' metered amounts.
    assert sum(taken.values()) <= sum(x.amount for lines in invoices for x in lines)
