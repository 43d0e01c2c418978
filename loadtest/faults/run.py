"""One fault under load: a steady v2 stream, the fault injected, recovery watched, totals checked.

Every event carries an identifier and is resent on a 5xx, 429 or connection error until it gets
a definite answer (a 400 ``duplicate_meter_event`` on a resend means an earlier try landed), so
every event the API acknowledged must be in the summaries exactly once: ``lost`` and ``doubled``
come from comparing them with what was acknowledged.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadtest.faults.stack import READY_TIMEOUT_S, FaultStack
from loadtest.generator import run_load
from loadtest.plan import Bounds, LoadConfig, MeterCounts, TrafficMix, meter_shapes, new_run_id
from loadtest.provision import create_accounts, provision
from loadtest.verify import verify_run

_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    # Blocking; returns once the fault is lifted, with notes on what it saw, if any.
    inject: Callable[[FaultStack], list[str] | None]
    # The stack's PostgreSQL data directory on a tmpfs of this many MiB (the full-disk fault).
    postgres_disk_mb: int | None = None


@dataclass(frozen=True, slots=True)
class FaultPlan:
    rate: float = 200.0  # events/s, one event per request
    before_s: float = 5.0  # steady load before the fault
    load_s: float = 30.0  # the whole load; it goes on while the fault lasts
    connections: int = 8
    customers: int = 50
    max_attempts: int = 60  # resends ride out a 10 s outage (backoff up to 2 s)
    verify_timeout_s: float = 120.0


@dataclass(slots=True)
class FaultResult:
    fault: str
    requests: int
    refused: dict[str, int]  # "503", no answer, other statuses
    fault_window_s: float  # from the injection until the fault was lifted
    recovery_s: float | None  # from the lift until every /readyz is 200 and nothing is refused
    accepted: int
    unresolved: int
    lost: int | None
    doubled: int | None
    verified: bool
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the fault could not run here

    @classmethod
    def skipped_because(cls, fault: str, reason: str) -> FaultResult:
        return cls(
            fault=fault,
            requests=0,
            refused={},
            fault_window_s=0.0,
            recovery_s=None,
            accepted=0,
            unresolved=0,
            lost=None,
            doubled=None,
            verified=False,
            skipped=reason,
        )

    @property
    def ok(self) -> bool:
        """Nothing lost, doubled or unresolved; a fault skipped here fails nothing."""
        if self.skipped is not None:
            return True
        return self.verified and self.lost == 0 and self.doubled == 0 and self.unresolved == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "requests": self.requests,
            "refused": self.refused,
            "fault_window_s": self.fault_window_s,
            "recovery_s": self.recovery_s,
            "accepted": self.accepted,
            "unresolved": self.unresolved,
            "lost": self.lost,
            "doubled": self.doubled,
            "verified": self.verified,
            "notes": self.notes,
            "skipped": self.skipped,
            "ok": self.ok,
        }


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - our own URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def _all_ready(stack: FaultStack, notes: list[str]) -> bool:
    """Whether every child answers /readyz 200; a child found dead is noted and started again,
    as a supervisor would."""
    for name, child in stack.children.items():
        if not child.alive():
            notes.append(f"{name} {child.exit_description()}; the runner started it again")
            await asyncio.to_thread(child.start)
    answers = await asyncio.gather(
        *(asyncio.to_thread(_answers, url) for url in stack.ready_urls.values())
    )
    return all(answers)


def refusals(statuses: dict[str, int]) -> dict[str, int]:
    """Requests without an acknowledgement: 5xx and 429 by status, and connection errors."""
    refused = {
        ("no answer (connection error or timeout)" if status == "transport" else status): n
        for status, n in statuses.items()
        if status in {"transport", "429"} or status.startswith("5")
    }
    return dict(sorted(refused.items()))


def _last_refused_second(timeline: list[dict[str, Any]]) -> int | None:
    seconds = [p["t"] for p in timeline if refusals(p["statuses"])]
    return max(seconds) if seconds else None


async def run_fault(stack: FaultStack, fault: Fault, plan: FaultPlan) -> FaultResult:
    run_id = new_run_id()
    (account,) = await create_accounts(stack.database_url, 1, run_id)
    setup = await provision(
        stack.base_url,
        [account.secret_key],
        meter_shapes(MeterCounts(raw=2, windowed=1)),
        plan.customers,
        run_id,
    )
    config = LoadConfig(
        bounds=Bounds(duration_s=plan.load_s),
        mode="v2",
        rate=plan.rate,
        workers=0,
        connections=plan.connections,
        mix=TrafficMix(),
        request_timeout_s=5.0,
        max_attempts=plan.max_attempts,
    )
    load_started = time.monotonic()
    load = asyncio.create_task(run_load(config, setup, label=fault.name, out=None))
    await asyncio.sleep(plan.before_s)
    injected = time.monotonic()
    said = await asyncio.to_thread(fault.inject, stack)
    lifted = time.monotonic()
    notes: list[str] = list(said or [])
    ready_at: float | None = None
    while time.monotonic() - lifted < READY_TIMEOUT_S:
        if await _all_ready(stack, notes):
            ready_at = time.monotonic()
            break
        await asyncio.sleep(_POLL_S)
    result = await load
    report = result.report
    last = _last_refused_second(report["timeline"])
    recovered_at = ready_at
    if recovered_at is not None and last is not None:
        recovered_at = max(recovered_at, load_started + last + 1)
    lost = doubled = None
    verified = False
    if result.expected is not None:
        checked = await verify_run(
            setup, result.expected, unresolved=result.unresolved, timeout_s=plan.verify_timeout_s
        )
        lost, doubled, verified = checked.lost, checked.doubled, checked.ok
        notes.extend(checked.samples[:3])
    return FaultResult(
        fault=fault.name,
        requests=report["requests"],
        refused=refusals(report["statuses"]),
        fault_window_s=round(lifted - injected, 1),
        recovery_s=None if recovered_at is None else round(max(0.0, recovered_at - lifted), 1),
        accepted=report["outcomes"].get("accepted", 0),
        unresolved=report["outcomes"].get("unresolved", 0),
        lost=lost,
        doubled=doubled,
        verified=verified,
        notes=notes,
    )
