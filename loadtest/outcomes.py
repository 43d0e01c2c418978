"""Counting what happened to requests and events, mergeable across lanes, seconds and workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from loadtest.expected_totals import ExpectedTotals, SeriesKey
from loadtest.latency import LatencyHistogram

Outcome = Literal[
    "accepted",  # a new event answered 2xx (or, on a retry, "duplicate": the first try landed)
    "duplicate_accepted",  # a deliberate repeat answered 2xx (the aggregator drops it)
    "duplicate_rejected",  # a deliberate repeat answered 400 duplicate_meter_event
    "invalid_rejected",  # a deliberately bad event answered 4xx
    "duplicate_sent",  # stream: repeats inside an accepted batch (checked asynchronously)
    "invalid_sent",  # stream: bad events inside an accepted batch (rejected asynchronously)
    "invalid_accepted",  # a bad event answered 2xx: a server bug
    "rejected_unexpected",  # a good event answered 4xx: a server bug
    "unresolved",  # no definite answer after every retry: unknown whether it counts
    "retried",  # a resend after 503, 5xx, 429 or a transport error
]
PROBLEM_OUTCOMES: tuple[Outcome, ...] = ("invalid_accepted", "rejected_unexpected", "unresolved")


@dataclass(slots=True)
class Tally:
    requests: int = 0
    events: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)  # "200", "400", "transport", ...
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def outcome(self, name: Outcome, n: int = 1) -> None:
        self.outcomes[name] = self.outcomes.get(name, 0) + n

    def status(self, status: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def merge(self, other: Tally) -> None:
        self.requests += other.requests
        self.events += other.events
        for name, n in other.outcomes.items():
            self.outcomes[name] = self.outcomes.get(name, 0) + n
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        self.latency.merge(other.latency)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One worker's activity during one second of the run (second 0 starts at the start)."""

    worker: int
    second: int
    tally: Tally


@dataclass(slots=True)
class WorkerResult:
    worker: int
    tally: Tally
    expected: ExpectedTotals | None
    unresolved: set[SeriesKey]
    samples: list[str]
    started_at: float
    finished_at: float
