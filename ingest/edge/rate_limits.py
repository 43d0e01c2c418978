"""Per-account rate limits: token buckets held in process memory, so checking costs no I/O.

Each ingest process enforces the limits on its own: with N processes behind one port an account
can reach N times the configured rate. The limits protect the pipeline from one noisy account;
they are not a billing boundary.

Every route names the limit it counts against (:data:`LimitClass`): the general ``api`` limit,
checked here after authentication; ``meter_events`` and ``stream``, which their handlers check
because they count events; or ``operational`` (health, readiness, metrics), which is not limited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter

from ingest.edge.auth import Principal
from ingest.edge.auth_failures import AddressBlocked, Client, FailedAuthentications
from ingest.edge.errors import ApiError, AuthenticationFailed, RateLimited, SessionExpired
from meterflow.settings.roles import IngestSettings

MAX_TRACKED_ACCOUNTS = 100_000

LimitClass = Literal["api", "meter_events", "stream", "operational"]


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


class ApiLimiter:
    """The general limit of every endpoint without one of its own: one bucket per account and
    mode, at the live-mode or the test-mode rate (Stripe's basic limit: 100/s live, 25/s test)."""

    def __init__(
        self,
        live_per_s: float,
        test_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._by_mode = {
            True: AccountLimiter("API requests in live mode", live_per_s, clock=clock),
            False: AccountLimiter("API requests in test mode", test_per_s, clock=clock),
        }

    def check(self, who: Principal) -> None:
        self._by_mode[who.livemode].check(who.account_id, who.livemode)


class RequestLimits:
    """The limits the app applies around every request, and the count of what they refused."""

    def __init__(
        self,
        settings: IngestSettings,
        refused: Counter,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = ApiLimiter(
            settings.rate_limit_api_live_per_s, settings.rate_limit_api_test_per_s, clock=clock
        )
        self.auth_failures = FailedAuthentications(
            settings.rate_limit_auth_failures,
            settings.rate_limit_auth_failures_window_s,
            settings.rate_limit_auth_block_s,
            clock=clock,
        )
        self._refused = refused

    def admit(self, limit_class: LimitClass, client: Client) -> None:
        """Before the body is read or the key looked up: refuse an address that is blocked."""
        if limit_class != "operational":
            self.auth_failures.check(client)

    def charge(self, limit_class: LimitClass, who: Principal) -> None:
        """After authentication: count the request against its account's general limit."""
        if limit_class == "api":
            self.api.check(who)

    def observe(self, error: ApiError, limit_class: LimitClass | None, client: Client) -> None:
        """Count a 429 by endpoint class and reason; count a failed authentication toward its
        address's block (an expired or revoked session token is a client that was let in, so it
        does not count)."""
        if isinstance(error, RateLimited):
            reason = "address" if isinstance(error, AddressBlocked) else "account"
            self._refused.labels(limit_class or "unmatched", reason).inc()
        elif isinstance(error, AuthenticationFailed) and not isinstance(error, SessionExpired):
            self.auth_failures.failed(client)
