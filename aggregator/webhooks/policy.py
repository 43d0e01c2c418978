"""Webhooks, the pure part: what is sent, how it is signed, and when a failed delivery is retried.

The signature is Stripe's: ``Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`` of
``"<t>.<body>"`` keyed by the endpoint's ``whsec_…`` secret, so Stripe's SDKs verify meterflow's
webhooks unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

ALL_EVENTS = "*"
SIGNATURE_HEADER = "Stripe-Signature"


def signature_header(secret: str, body: bytes, timestamp_s: int) -> str:
    """The ``Stripe-Signature`` value for ``body`` sent at ``timestamp_s``."""
    signed = f"{timestamp_s}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp_s},v1={digest}"


def wants(enabled_events: Iterable[str], event_type: str) -> bool:
    """Whether an endpoint listening to ``enabled_events`` receives ``event_type``."""
    return any(e in (ALL_EVENTS, event_type) for e in enabled_events)


# -- retries -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    backoff_base_ms: int
    backoff_max_ms: int

    def delay_ms(self, attempt: int) -> int:
        """Wait after failed attempt ``attempt`` (1-based): base, 2 x base, 4 x base, … capped."""
        exponent: int = min(max(attempt - 1, 0), 40)
        return min(self.backoff_max_ms, self.backoff_base_ms * (1 << exponent))


Outcome = Literal["succeeded", "retrying", "failed"]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt of one delivery found."""

    delivery_id: int
    attempt: int
    started_ms: int
    duration_ms: int
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class NextState:
    outcome: Outcome
    next_attempt_ms: int | None  # when a retry is due; None once the delivery is over


def after_attempt(result: AttemptResult, policy: RetryPolicy, now_ms: int) -> NextState:
    """Where a delivery stands after ``result``."""
    if result.ok:
        return NextState("succeeded", None)
    if result.attempt >= policy.max_attempts:
        return NextState("failed", None)
    return NextState("retrying", now_ms + policy.delay_ms(result.attempt))


def is_success(status_code: int) -> bool:
    return 200 <= status_code < 300


# -- fairness ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DueDelivery:
    delivery_id: int
    endpoint_id: str


def pick_fairly(
    due: Sequence[DueDelivery],
    *,
    free_slots: int,
    in_flight: Mapping[str, int],
    per_endpoint: int,
) -> list[DueDelivery]:
    """Which due deliveries to start now: at most ``free_slots`` in all and at most
    ``per_endpoint`` in flight per endpoint, taking endpoints in turn so that one endpoint with a
    backlog (or a dead one) cannot take every slot."""
    queues: dict[str, list[DueDelivery]] = {}
    for delivery in due:
        queues.setdefault(delivery.endpoint_id, []).append(delivery)
    busy = Counter(in_flight)
    picked: list[DueDelivery] = []
    while len(picked) < free_slots:
        progressed = False
        for endpoint, queue in queues.items():
            if len(picked) >= free_slots:
                break
            if queue and busy[endpoint] < per_endpoint:
                picked.append(queue.pop(0))
                busy[endpoint] += 1
                progressed = True
        if not progressed:
            break
    return picked
