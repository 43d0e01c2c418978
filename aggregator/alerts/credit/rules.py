"""Credit balance alerts, the pure part: what one evaluation decides for each armed or disarmed
alert, given its customer's available balances.

- armed, balance <= value: fire (firing number ``firings + 1``), and disarm;
- disarmed, balance > value: re-arm, so the next drop fires again;
- otherwise nothing changes.

A customer without credits in the alert's currency has an available balance of 0 there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from meterflow.alerts import CreditBalanceAlert
from meterflow.usage.keys import UsageKey

CustomerKey = tuple[str, bool, str]  # (account, livemode, customer)


@dataclass(frozen=True, slots=True)
class AlertState:
    """An active credit balance alert with its state, as locked for one evaluation."""

    alert: CreditBalanceAlert
    armed: bool
    firings: int  # how many times it fired so far

    @property
    def customer_key(self) -> CustomerKey:
        a = self.alert
        return (a.account_id, a.livemode, a.customer)


@dataclass(frozen=True, slots=True)
class CreditFiring:
    alert: CreditBalanceAlert
    sequence: int  # 1, 2, …: the alert's nth firing (``alert_firings.period_start``)
    value: int  # the available balance that was at or below the alert's value (minor units)


@dataclass(frozen=True, slots=True)
class Verdict:
    firings: list[CreditFiring] = field(default_factory=list)
    rearm: list[str] = field(default_factory=list)  # alert ids


Balances = Mapping[CustomerKey, Mapping[str, int]]  # customer -> currency -> available


def customers_of(usage_keys: Iterable[UsageKey]) -> list[CustomerKey]:
    """The distinct customers of changed (account, mode, meter, customer) usage, sorted."""
    return sorted({(k[0], k[1], k[3]) for k in usage_keys})


def judge(states: Sequence[AlertState], available: Balances) -> Verdict:
    """What the evaluation of ``states`` against the ``available`` balances decides."""
    verdict = Verdict()
    for state in states:
        alert = state.alert
        balance = available.get(state.customer_key, {}).get(alert.currency, 0)
        if balance <= alert.lte:
            if state.armed:
                verdict.firings.append(CreditFiring(alert, state.firings + 1, balance))
        elif not state.armed:
            verdict.rearm.append(alert.id)
    return verdict
