"""The traffic model: which event a lane sends next (pure; the clock and the seed come in).

Customers are split between lanes (one lane = one connection, one request in flight), so every
event of a (meter, customer) goes through one lane in order. That makes the order in which a lane
is answered the order in which the server received the events: what ``last`` and pre-aggregated
meters depend on.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from typing import Literal, NamedTuple, TypeVar

from loadtest.plan import AccountPlan, RunSetup, TrafficMix, customer_id

EventKind = Literal["new", "duplicate", "invalid"]
InvalidReason = Literal["no_meter", "no_customer", "bad_value", "too_old", "in_future"]
INVALID_REASONS: tuple[InvalidReason, ...] = (
    "no_meter",
    "no_customer",
    "bad_value",
    "too_old",
    "in_future",
)
CUSTOMER_KEY = "stripe_customer_id"
VALUE_KEY = "value"
_DUPLICATE_MEMORY = 512  # recently acknowledged events a duplicate may repeat
_TOO_OLD_S = 40 * 86_400
_IN_FUTURE_S = 3_600


class PlannedEvent(NamedTuple):
    """One event to send. A named tuple: the generator makes one per event and must stay cheap
    next to the server it measures on the same cores."""

    kind: EventKind
    account: int  # index into RunSetup.accounts
    event_name: str
    customer: str | None  # None: the payload leaves the customer out (an invalid event)
    value: str
    timestamp_s: int
    identifier: str
    invalid_reason: InvalidReason | None = None

    def payload(self) -> dict[str, str]:
        payload = {VALUE_KEY: self.value}
        if self.customer is not None:
            payload[CUSTOMER_KEY] = self.customer
        return payload


def lane_customers(setup: RunSetup, lane: int, lanes: int) -> list[str]:
    """The customers only this lane sends events for."""
    return [customer_id(setup.run_id, n) for n in range(lane, setup.customers, lanes)]


class LaneTraffic:
    """An endless, seeded sequence of events for one lane."""

    def __init__(
        self, setup: RunSetup, mix: TrafficMix, *, lane: int, lanes: int, seed: int
    ) -> None:
        if not setup.accounts or any(not a.meters for a in setup.accounts):
            raise ValueError("every account needs at least one meter")
        self._setup = setup
        self._accounts: tuple[AccountPlan, ...] = setup.accounts
        self._mix = mix
        self._lane = lane
        self._rng = random.Random(f"{seed}/{lane}")
        self.customers = lane_customers(setup, lane, lanes)
        if not self.customers:
            raise ValueError(
                f"lane {lane} has no customers: use at most as many lanes as customers"
            )
        self._seq = 0
        self._acknowledged: list[deque[PlannedEvent]] = [
            deque(maxlen=_DUPLICATE_MEMORY) for _ in setup.accounts
        ]

    def next_event(self, now_s: int, account: int | None = None) -> PlannedEvent:
        """The next event, for ``account`` if given, else for a random account."""
        if account is None:
            account = int(self._rng.random() * len(self._accounts))
        roll = self._rng.random()
        if roll < self._mix.duplicate_ratio:
            earlier = self._acknowledged[account]
            if earlier:
                return _pick(self._rng, earlier)._replace(kind="duplicate")
            return self._new(now_s, account)  # nothing acknowledged yet to repeat
        if roll < self._mix.duplicate_ratio + self._mix.invalid_ratio:
            return self._invalid(now_s, account)
        return self._new(now_s, account)

    def next_batch(self, now_s: int, size: int) -> list[PlannedEvent]:
        """Events for one stream request: one account (a session belongs to one account)."""
        account = self._rng.randrange(len(self._accounts))
        return [self.next_event(now_s, account) for _ in range(size)]

    def acknowledged(self, event: PlannedEvent) -> None:
        """An event the server accepted; later duplicates repeat such events."""
        if event.kind == "new":
            self._acknowledged[event.account].append(event)

    def _identifier(self) -> str:
        self._seq += 1
        return f"{self._setup.run_id}-{self._lane}-{self._seq}"

    def _new(self, now_s: int, account: int) -> PlannedEvent:
        rng = self._rng
        meter = _pick(rng, self._accounts[account].meters)
        timestamp_s = now_s
        if rng.random() < self._mix.late_ratio:
            timestamp_s -= rng.randint(self._mix.min_late_s, self._mix.max_late_s)
        return PlannedEvent(
            kind="new",
            account=account,
            event_name=meter.event_name,
            customer=_pick(rng, self.customers),
            value=_value(rng),
            timestamp_s=timestamp_s,
            identifier=self._identifier(),
        )

    def _invalid(self, now_s: int, account: int) -> PlannedEvent:
        base = self._new(now_s, account)
        reason = self._rng.choice(INVALID_REASONS)
        if reason == "no_meter":
            return base._replace(kind="invalid", invalid_reason=reason, event_name="lt_no_meter")
        if reason == "no_customer":
            return base._replace(kind="invalid", invalid_reason=reason, customer=None)
        if reason == "bad_value":
            value = self._rng.choice(("1e3", "ten", "+5", " 7", "0x10", "NaN"))
            return base._replace(kind="invalid", invalid_reason=reason, value=value)
        offset = -_TOO_OLD_S if reason == "too_old" else _IN_FUTURE_S
        return base._replace(kind="invalid", invalid_reason=reason, timestamp_s=now_s + offset)


T = TypeVar("T")


def _pick(rng: random.Random, items: Sequence[T]) -> T:
    """A uniformly chosen item: ``rng.choice`` at a fraction of its cost (one ``random()``)."""
    return items[int(rng.random() * len(items))]


def _value(rng: random.Random) -> str:
    """A positive decimal string: mostly integers, sometimes with a two-digit fraction."""
    if rng.random() < 0.7:
        return str(1 + int(rng.random() * 1000))
    cents = 1 + int(rng.random() * 100_000)
    return f"{cents // 100}.{cents % 100:02d}"
