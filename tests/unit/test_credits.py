"""Credit application and invoices net of earlier ones: every ordering rule, eligibility, and
property tests over random grant and usage histories."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterflow.billing.credits import (
    Application,
    CreditableLine,
    GrantTerms,
    apply_credits,
    credits_per_line,
)
from meterflow.billing.invoicing import Billed, net_line
from meterflow.billing.prices import PriceTerms, Tier
from meterflow.billing.rating import rate

PERIOD_END = 1_000_000
METERED = CreditableLine("price_a", True, "usd", 100)


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


def first_used(*grants: GrantTerms) -> str:
    applied = apply_credits(list(grants), [dataclasses.replace(METERED, amount=1)], PERIOD_END)
    return applied[0].grant


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # 1. priority: the lower number first
        (grant("b", priority=10), grant("a", priority=11)),
        # 2. the earliest expiry first; never expiring last
        (grant("b", expires_at=PERIOD_END + 5), grant("a", expires_at=PERIOD_END + 6)),
        (grant("b", expires_at=PERIOD_END + 5), grant("a")),
        # 3. promotional before paid
        (grant("b", category="promotional"), grant("a", category="paid")),
        # 4. the earliest effective_at
        (grant("b", effective_at=5), grant("a", effective_at=6)),
        # 5. the earliest created
        (grant("b", created=5), grant("a", created=6)),
        # each rule outranks the ones after it
        (grant("b", priority=1, created=9), grant("a", priority=2, created=1)),
        (
            grant("b", expires_at=PERIOD_END + 1, category="paid"),
            grant("a", category="promotional"),
        ),
        (grant("b", category="promotional", effective_at=9), grant("a", effective_at=1)),
        (grant("b", effective_at=1, created=9), grant("a", effective_at=2, created=1)),
    ],
)
def test_grants_are_consumed_in_stripes_order(first: GrantTerms, second: GrantTerms) -> None:
    assert first_used(second, first) == first.id
    assert first_used(first, second) == first.id


@pytest.mark.parametrize(
    ("terms", "line"),
    [
        ({"currency": "eur"}, METERED),
        ({"scope_prices": frozenset({"price_b"})}, METERED),
        ({}, dataclasses.replace(METERED, metered=False)),  # licensed prices never qualify
        ({"effective_at": PERIOD_END + 1}, METERED),
        ({"expires_at": PERIOD_END}, METERED),  # the period must end before the expiry
        ({"voided": True}, METERED),
        ({"balance": 0}, METERED),
    ],
)
def test_a_grant_that_does_not_qualify_takes_nothing(
    terms: dict[str, Any], line: CreditableLine
) -> None:
    assert apply_credits([grant("g", **terms)], [line], PERIOD_END) == []


def test_a_grant_scoped_to_prices_serves_only_their_lines_and_lines_go_in_order() -> None:
    lines = [
        CreditableLine("price_a", True, "usd", 70),
        CreditableLine("price_b", True, "usd", 70),
        CreditableLine("price_c", True, "usd", 70),
    ]
    scoped = grant("scoped", 100, priority=0, scope_prices=frozenset({"price_b", "price_c"}))
    general = grant("general", 100)
    applied = apply_credits([general, scoped], lines, PERIOD_END)
    assert applied == [
        Application(0, "general", 70),
        Application(1, "scoped", 70),
        Application(2, "scoped", 30),
        Application(2, "general", 30),
    ]
    assert credits_per_line(applied, 3) == [70, 70, 60]


# -- property: the ledger of every grant balances -----------------------------------------------

grant_strategy = st.builds(
    lambda i, amount, priority, category, expires, scoped: grant(
        f"g{i}",
        amount,
        priority=priority,
        category=category,
        expires_at=None if expires is None else PERIOD_END + expires,
        created=i,
        scope_prices=frozenset({"price_a"}) if scoped else None,
    ),
    st.integers(0, 10_000),
    st.integers(1, 500),
    st.integers(0, 3),
    st.sampled_from(["paid", "promotional"]),
    st.none() | st.integers(-2, 2),
    st.booleans(),
)
line_strategy = st.builds(
    CreditableLine,
    st.sampled_from(["price_a", "price_b"]),
    st.booleans(),
    st.sampled_from(["usd", "eur"]),
    st.integers(0, 400),
)


@settings(max_examples=300, deadline=None)
@given(
    grants=st.lists(grant_strategy, min_size=1, max_size=6, unique_by=lambda g: g.id),
    invoices=st.lists(
        st.tuples(st.lists(line_strategy, max_size=5), st.booleans()), min_size=1, max_size=6
    ),
)
def test_for_every_grant_granted_minus_debits_is_its_balance(
    grants: list[GrantTerms], invoices: list[tuple[list[CreditableLine], bool]]
) -> None:
    """Finalize invoices one after another, applying credits from the ledger's balances, and
    void some of them (reinstating what they took); then each grant's ledger balances: granted
    plus reinstated, minus applied, is never below zero, and no line takes more than its amount.
    """
    ledger: dict[str, list[int]] = {g.id: [g.balance] for g in grants}  # signed entries
    for lines, voided in invoices:
        current = [dataclasses.replace(g, balance=sum(ledger[g.id])) for g in grants]
        applied = apply_credits(current, lines, PERIOD_END)
        for index, total in enumerate(credits_per_line(applied, len(lines))):
            assert 0 <= total <= lines[index].amount
        for a in applied:
            assert a.amount > 0
            ledger[a.grant].append(-a.amount)
        if voided:
            for a in applied:
                ledger[a.grant].append(a.amount)
    for g in grants:
        assert sum(ledger[g.id]) >= 0
        debits = -sum(e for e in ledger[g.id][1:] if e < 0)
        reinstated = sum(e for e in ledger[g.id][1:] if e > 0)
        assert g.balance + reinstated - debits == sum(ledger[g.id])


# -- property: a period's invoices bill its usage once --------------------------------------------

TIERS = PriceTerms.tiered(
    "graduated", (Tier(100, Decimal(2), Decimal(50)), Tier(None, Decimal("0.5")))
)


@settings(max_examples=300, deadline=None)
@given(
    usage_at_invoices=st.lists(st.integers(-50, 2_000), min_size=1, max_size=8),
    terms=st.sampled_from([TIERS, PriceTerms.per_unit(Decimal("0.3"))]),
)
def test_a_periods_invoices_together_bill_its_usage_once(
    usage_at_invoices: list[int], terms: PriceTerms
) -> None:
    """Threshold invoices and then the period's end, each net of the earlier ones: together they
    bill the most the period's usage was ever rated at, which for usage that only grows is
    exactly what one invoice at the end bills; no unit is billed twice."""
    billed = Billed()
    amounts = []
    for usage in usage_at_invoices:
        line = net_line(terms, Decimal(usage), billed)
        assert line.amount >= 0
        amounts.append(line.amount)
        billed = Billed(billed.quantity + line.quantity, billed.amount + line.amount)
    assert sum(amounts) == max(rate(terms, Decimal(u)).amount for u in usage_at_invoices)
    growing = sorted(usage_at_invoices)
    billed = Billed()
    total = 0
    for usage in growing:
        line = net_line(terms, Decimal(usage), billed)
        total += line.amount
        billed = Billed(billed.quantity + line.quantity, billed.amount + line.amount)
    assert total == rate(terms, Decimal(growing[-1])).amount
