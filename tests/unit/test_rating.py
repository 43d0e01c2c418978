"""Rating: worked examples, and a property test against a deliberately simple model."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterflow.billing.money import decimal_string, round_to_minor_unit
from meterflow.billing.prices import PriceTerms, Tier, TransformQuantity
from meterflow.billing.rating import rate

D = Decimal


@pytest.mark.parametrize(
    ("amount", "minor"),
    [("1.5", 2), ("2.5", 3), ("1.4999", 1), ("0.5", 1), ("0.4", 0), ("-1.5", -2), ("7", 7)],
)
def test_a_line_rounds_once_to_a_whole_minor_unit_halves_away_from_zero(
    amount: str, minor: int
) -> None:
    assert round_to_minor_unit(D(amount)) == minor


@pytest.mark.parametrize(
    ("value", "text"), [("0.050", "0.05"), ("2000", "2000"), ("105.50", "105.5"), ("1E+3", "1000")]
)
def test_decimals_are_written_as_stripe_writes_them(value: str, text: str) -> None:
    assert decimal_string(D(value)) == text


def test_alpaca_tokens_four_cents_per_hundred_rounded_up() -> None:
    # 0.04 USD per 100 tokens, rounded up: 1,234 tokens are 13 packs of 100.
    terms = PriceTerms.per_unit(D(4), TransformQuantity(divide_by=100, round="up"))
    line = rate(terms, D(1234))
    assert (line.quantity, line.amount) == (D(13), 52)
    down = rate(PriceTerms.per_unit(D(4), TransformQuantity(100, "down")), D(1234))
    assert (down.quantity, down.amount) == (D(12), 48)


def test_decimal_unit_amounts_round_per_line_not_per_unit() -> None:
    # Stripe's example: 30 units at 0.05 cents are 1.5 cents, billed 2.
    line = rate(PriceTerms.per_unit(D("0.05")), D(30))
    assert (line.amount_exact, line.amount) == (D("1.50"), 2)


def test_negative_usage_bills_quantity_zero() -> None:
    line = rate(PriceTerms.per_unit(D(100)), D(-7))
    assert (line.usage, line.quantity, line.amount) == (D(-7), D(0), 0)


TIERS = (
    Tier(up_to=10, unit_amount=D(100), flat_amount=D(500)),
    Tier(up_to=20, unit_amount=D(80)),
    Tier(up_to=None, unit_amount=D(50), flat_amount=D(1000)),
)


@pytest.mark.parametrize(
    ("quantity", "graduated", "volume"),
    [
        (0, 500, 500),  # the first tier's flat amount is a base fee
        (10, 500 + 1000, 500 + 1000),
        (15, 500 + 1000 + 5 * 80, 15 * 80),
        (20, 500 + 1000 + 800, 20 * 80),
        (25, 500 + 1000 + 800 + 1000 + 5 * 50, 1000 + 25 * 50),
    ],
)
def test_tiers_graduated_and_volume(quantity: int, graduated: int, volume: int) -> None:
    assert rate(PriceTerms.tiered("graduated", TIERS), D(quantity)).amount == graduated
    assert rate(PriceTerms.tiered("volume", TIERS), D(quantity)).amount == volume


def test_fractional_usage_enters_the_next_tier() -> None:
    line = rate(PriceTerms.tiered("graduated", TIERS), D("10.5"))
    assert line.amount_exact == D(500) + D(1000) + D("0.5") * 80


# The model: integer quantities, one unit at a time, no cleverness.
def _model_graduated(tiers: list[Tier], quantity: int) -> Decimal:
    total = tiers[0].flat_amount
    tier_index = 0
    for unit in range(1, quantity + 1):
        while tiers[tier_index].up_to is not None and unit > (tiers[tier_index].up_to or 0):
            tier_index += 1
            total += tiers[tier_index].flat_amount
        total += tiers[tier_index].unit_amount
    return total


def _model_volume(tiers: list[Tier], quantity: int) -> Decimal:
    chosen = next(t for t in tiers if t.up_to is None or quantity <= t.up_to)
    return chosen.flat_amount + quantity * chosen.unit_amount


amounts = st.decimals(min_value=0, max_value=10_000, places=3, allow_nan=False)


@st.composite
def tier_lists(draw: st.DrawFn) -> list[Tier]:
    bounds = sorted(draw(st.sets(st.integers(1, 60), min_size=0, max_size=4)))
    ups: list[int | None] = [*bounds, None]
    return [Tier(up, draw(amounts), draw(st.sampled_from([D(0), draw(amounts)]))) for up in ups]


@settings(max_examples=300, deadline=None)
@given(tiers=tier_lists(), quantity=st.integers(0, 120))
def test_rating_agrees_with_the_unit_by_unit_model(tiers: list[Tier], quantity: int) -> None:
    graduated = rate(PriceTerms.tiered("graduated", tuple(tiers)), D(quantity))
    volume = rate(PriceTerms.tiered("volume", tuple(tiers)), D(quantity))
    assert graduated.amount_exact == _model_graduated(tiers, quantity)
    assert volume.amount_exact == _model_volume(tiers, quantity)
    assert graduated.amount == round_to_minor_unit(graduated.amount_exact)


@settings(max_examples=200, deadline=None)
@given(
    usage=st.integers(-50, 10_000),
    divide_by=st.integers(1, 500),
    unit=amounts,
    up=st.booleans(),
)
def test_transform_quantity_agrees_with_integer_division(
    usage: int, divide_by: int, unit: Decimal, up: bool
) -> None:
    terms = PriceTerms.per_unit(unit, TransformQuantity(divide_by, "up" if up else "down"))
    clamped = max(usage, 0)
    packs = -(-clamped // divide_by) if up else clamped // divide_by
    line = rate(terms, D(usage))
    assert line.quantity == packs
    assert line.amount_exact == packs * unit
