"""Whose usage, over which span, and its folded totals: the vocabulary of usage reads (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from meterflow.meters import Formula

UsageKey = tuple[str, bool, str, str]  # (account, livemode, meter, customer)

UsageSpan = tuple[str, bool, str, str, int, int]
"""(account, livemode, meter, customer, start_s, end_s): a usage key over ``[start_s, end_s)``."""


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Folded usage over a span: enough for every formula (the defaults: no usage)."""

    value_sum: Decimal = Decimal(0)
    event_count: int = 0
    last_value: Decimal | None = None

    def value(self, formula: Formula) -> Decimal:
        """The aggregated value by the meter's formula (0 without usage)."""
        if formula == "sum":
            return self.value_sum
        if formula == "count":
            return Decimal(self.event_count)
        return Decimal(0) if self.last_value is None else self.last_value
