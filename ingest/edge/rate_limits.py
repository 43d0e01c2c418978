"""Per-account rate limits: token buckets held in process memory, so checking costs no I/O.

Each ingest process enforces the limits on its own: with N processes behind one port an account
can reach N times the configured rate. The limits protect the pipeline from one noisy account;
they are not a billing boundary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ingest.edge.errors import RateLimited

MAX_TRACKED_ACCOUNTS = 100_000


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    rate: float
    burst: float
    tokens: float
    updated_s: float

    def take(self, amount: float, now_s: float) -> float:
        """Take ``amount`` tokens; returns 0 on success, else the seconds until it would fit."""
        self.tokens = min(self.burst, self.tokens + (now_s - self.updated_s) * self.rate)
        self.updated_s = now_s
        if amount <= self.tokens:
            self.tokens -= amount
            return 0.0
        if amount > self.burst:  # can never fit: wait for a full bucket, then it is refused again
            return max(self.burst - self.tokens, 0.0) / self.rate or 1.0
        return (amount - self.tokens) / self.rate


class AccountLimiter:
    """One bucket per (account, mode) for one kind of traffic, e.g. stream events."""

    def __init__(
        self,
        what: str,
        per_second: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = what
        self._rate = per_second
        self._burst = burst if burst is not None else per_second
        self._clock = clock
        self._buckets: dict[tuple[str, bool], TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def check(self, account_id: str, livemode: bool, amount: float = 1.0) -> None:
        """Raise :class:`RateLimited` (429 with ``Retry-After``) when over the limit."""
        if not self.enabled:
            return
        now = self._clock()
        key = (account_id, livemode)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_ACCOUNTS:
                self._buckets.clear()
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, self._burst, now)
        wait_s = bucket.take(amount, now)
        if wait_s > 0:
            raise RateLimited(
                f"Too many {self._what} for this account: the limit is {self._rate:g} per "
                "second. Retry after the time given in Retry-After, with exponential backoff.",
                code="rate_limit",
                headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
