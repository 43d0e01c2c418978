"""What a load run targets: accounts, their meters, customers, and the traffic mix (pure values).

Everything here is picklable, so worker processes receive it as is.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import cycle, islice
from typing import Literal

from meterflow.meters import Formula
from meterflow.windows import DAY_S, HOUR_S
from meterflow.windows import TimeWindow as Window

Mode = Literal["v2", "v1", "stream"]

# Meters are drawn from these in order, so small runs still cover every formula.
_RAW_MIX: tuple[tuple[Formula, None], ...] = (("count", None), ("sum", None), ("last", None))
_WINDOWED_MIX: tuple[tuple[Formula, Window], ...] = (
    ("sum", "hour"),
    ("count", "day"),
    ("last", "hour"),
    ("count", "hour"),
    ("sum", "day"),
    ("last", "day"),
)


@dataclass(frozen=True, slots=True)
class MeterPlan:
    event_name: str
    formula: Formula
    window: Window | None
    meter_id: str = ""

    @property
    def order_sensitive(self) -> bool:
        """Whether the result depends on receipt order (``last``, or window overwrites)."""
        return self.formula == "last" or self.window is not None


@dataclass(frozen=True, slots=True)
class AccountPlan:
    label: str
    secret_key: str
    meters: tuple[MeterPlan, ...]

    def meter(self, event_name: str) -> MeterPlan:
        for meter in self.meters:
            if meter.event_name == event_name:
                return meter
        raise KeyError(event_name)


@dataclass(frozen=True, slots=True)
class RunSetup:
    """The accounts and meters of one run; customers are ``customer_id(run_id, n)``."""

    run_id: str
    base_url: str
    accounts: tuple[AccountPlan, ...]
    customers: int


@dataclass(frozen=True, slots=True)
class TrafficMix:
    """Shares of deliberately repeated, invalid and back-dated events among all sent."""

    duplicate_ratio: float = 0.0
    invalid_ratio: float = 0.0
    late_ratio: float = 0.0
    min_late_s: int = HOUR_S
    max_late_s: int = 34 * DAY_S  # Stripe accepts 35 days back; keep a day of margin

    def __post_init__(self) -> None:
        shares = (self.duplicate_ratio, self.invalid_ratio, self.late_ratio)
        if (
            any(not 0.0 <= s <= 1.0 for s in shares)
            or self.duplicate_ratio + self.invalid_ratio > 1
        ):
            raise ValueError("ratios must lie in [0, 1] and duplicates + invalid must not exceed 1")
        if not 0 < self.min_late_s <= self.max_late_s <= 35 * DAY_S:
            raise ValueError("late events must be between 0 and 35 days back")


@dataclass(frozen=True, slots=True)
class MeterCounts:
    raw: int = 2
    windowed: int = 2

    def __post_init__(self) -> None:
        if self.raw < 0 or self.windowed < 0 or self.raw + self.windowed == 0:
            raise ValueError("need at least one meter")


@dataclass(frozen=True, slots=True)
class Bounds:
    """A run ends at whichever comes first; at least one must be given."""

    duration_s: float | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if self.duration_s is None and self.count is None:
            raise ValueError("a run needs a duration or a count (or both)")
        if (self.duration_s is not None and self.duration_s <= 0) or (
            self.count is not None and self.count <= 0
        ):
            raise ValueError("duration and count must be positive")


def new_run_id() -> str:
    return secrets.token_hex(4)


def customer_id(run_id: str, n: int) -> str:
    return f"cus_lt{run_id}{n:06d}"


def meter_shapes(counts: MeterCounts) -> list[tuple[Formula, Window | None]]:
    """``counts.raw`` raw meters then ``counts.windowed`` pre-aggregated ones, formulas rotating."""
    raw: Iterator[tuple[Formula, Window | None]] = islice(cycle(_RAW_MIX), counts.raw)
    windowed: Iterator[tuple[Formula, Window | None]] = islice(
        cycle(_WINDOWED_MIX), counts.windowed
    )
    return [*raw, *windowed]


def meter_event_name(run_id: str, index: int, formula: Formula, window: Window | None) -> str:
    return f"lt_{run_id}_{index}_{formula}_{window or 'raw'}"


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """How to drive the API: endpoint, pacing, bounds, concurrency, mix."""

    bounds: Bounds
    mode: Mode = "v2"
    rate: float | None = None  # events per second over all workers; None: as fast as possible
    workers: int = 0  # worker processes; 0 runs the lanes in the calling process
    connections: int = 16  # per worker; each connection is one lane with one request in flight
    batch_size: int = 100  # events per stream request
    mix: TrafficMix = TrafficMix()
    seed: int = 1
    request_timeout_s: float = 10.0
    max_attempts: int = 5  # sends of one unconfirmed event (503, timeout) before giving up
    track_totals: bool = True  # False only against the no-op target

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.workers < 0 or self.connections < 1:
            raise ValueError("need workers >= 0 and connections >= 1")
        if not 1 <= self.batch_size <= 100:
            raise ValueError("a stream request carries 1 to 100 events")

    @property
    def lanes(self) -> int:
        return max(1, self.workers) * self.connections
