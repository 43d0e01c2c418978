"""End-to-end verification: do the event summaries show exactly what the server acknowledged?

Every (account, meter, customer) of the run is checked over the whole range, including pairs that
got no events (they must show 0); a sample of customers is also checked per hour and per day.
Checks that do not match yet are polled again until they do or the deadline passes, which is how
the pipeline is given time to drain.

A series with an unresolved event (no definite answer after every retry: the server may or may not
have counted it, at most once) is checked within bounds when its meter is a raw ``sum`` or
``count``: its whole-range total must be at least what was acknowledged (an acknowledged event
counts exactly once) and at most that plus its unresolved events (an unanswered one at most once).
For the other meters (``last``, pre-aggregated windows) the result depends on which events the
server kept, so such series are left out, and counted as such.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from loadtest.client import HttpClient, HttpResponse, TransportError
from loadtest.expected_totals import ExpectedTotals, SeriesKey
from loadtest.plan import RunSetup, customer_id
from loadtest.wire import METERS, RequestEncoder, host_and_port
from meterflow.errors import MeterflowError
from meterflow.windows import DAY_S, WINDOW_S
from meterflow.windows import TimeWindow as Window

_LOOKBACK_S = 36 * DAY_S
_RETRY_PAUSE_S = 0.5
# A 429 (the server's per-account limit: 25 requests/s in test mode by default) is waited out
# as Retry-After asks, this many times per request at most.
_RATE_LIMITED_RETRIES = 60
_PAGE = 100
_MAX_SAMPLES = 20


class SummaryRequestFailed(MeterflowError):
    """``event_summaries`` answered something other than a summary list."""


@dataclass(frozen=True, slots=True)
class Check:
    account: int
    event_name: str
    customer: str
    window: Window | None  # None: one summary over the whole range
    # Whole range only: the series has unresolved events, so its total must lie between the
    # acknowledged events' and that plus the unresolved ones'.
    ranged: bool = False

    @property
    def series(self) -> SeriesKey:
        return (self.account, self.event_name, self.customer)


@dataclass(slots=True)
class Verification:
    checks: int = 0
    matched: int = 0
    mismatched: int = 0
    lost: int = 0  # count meters: events (raw) or windows (pre-aggregated) missing from summaries
    doubled: int = 0  # count meters: events or windows shown beyond what was acknowledged
    short: int = 0  # sum and count meters: whole-range checks below the expected value
    excess: int = 0  # ... above it
    excluded_series: int = 0
    ranged_series: int = 0
    window_checks: int = 0
    waited_s: float = 0.0
    samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.mismatched == 0 and self.lost == 0 and self.doubled == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def text(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        lines = [
            f"verification {verdict}: {self.matched}/{self.checks} checks match "
            f"({self.window_checks} per-window) after {self.waited_s:.1f} s; "
            f"lost {self.lost}, doubled {self.doubled}, short {self.short}, "
            f"excess {self.excess}, excluded series {self.excluded_series}, series within "
            f"bounds {self.ranged_series}"
        ]
        lines.extend(f"  {s}" for s in self.samples)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Observed:
    check: Check
    matched: bool
    expected: Decimal | dict[int, Decimal]
    observed: float | dict[int, float] | str  # str: the request failed
    upper: Decimal | None = None  # ranged checks: the most the total may be


def summary_range(now_s: float) -> tuple[int, int]:
    """Day-aligned ``[start, end)`` covering every timestamp a run can have sent."""
    today = int(now_s) - int(now_s) % DAY_S
    return today - _LOOKBACK_S, today + DAY_S


def plan_checks(
    setup: RunSetup, unresolved: set[SeriesKey], window_sample: int
) -> tuple[list[Check], int]:
    """Whole-range checks for everything, window checks for a spread-out sample of customers;
    series with unresolved events get a ranged whole-range check where their meter allows one,
    else none (counted and returned)."""
    customers = [customer_id(setup.run_id, n) for n in range(setup.customers)]
    step = max(1, len(customers) // max(1, window_sample))
    sampled = set(customers[::step][:window_sample])
    checks: list[Check] = []
    skipped = 0
    for index, account in enumerate(setup.accounts):
        for meter in account.meters:
            for customer in customers:
                if (index, meter.event_name, customer) in unresolved:
                    if meter.window is None and meter.formula in ("sum", "count"):
                        checks.append(Check(index, meter.event_name, customer, None, ranged=True))
                    else:
                        skipped += 1
                    continue
                checks.append(Check(index, meter.event_name, customer, None))
                if customer in sampled:
                    checks.append(Check(index, meter.event_name, customer, "hour"))
                    checks.append(Check(index, meter.event_name, customer, "day"))
    return checks, skipped


async def verify_run(
    setup: RunSetup,
    expected: ExpectedTotals,
    *,
    unresolved: Iterable[SeriesKey] = (),
    timeout_s: float = 60.0,
    window_sample: int = 10,
    connections: int = 8,
) -> Verification:
    started = time.time()
    start, end = summary_range(started)
    checks, skipped = plan_checks(setup, set(unresolved) | set(expected.unconfirmed), window_sample)
    reader = _SummaryReader(setup, expected, start, end, connections)
    results: dict[Check, _Observed] = {}
    pending = checks
    try:
        while True:
            for observed in await reader.observe_all(pending):
                results[observed.check] = observed
            pending = [c for c in pending if not results[c].matched]
            if not pending or time.time() - started > timeout_s:
                break
            await asyncio.sleep(_RETRY_PAUSE_S)
    finally:
        reader.close()
    verification = _tally(setup, list(results.values()))
    verification.excluded_series = skipped
    verification.ranged_series = sum(check.ranged for check in checks)
    verification.waited_s = round(time.time() - started, 2)
    return verification


def _tally(setup: RunSetup, observations: list[_Observed]) -> Verification:
    v = Verification(checks=len(observations))
    for o in observations:
        check = o.check
        v.window_checks += check.window is not None
        if o.matched:
            v.matched += 1
            continue
        v.mismatched += 1
        if len(v.samples) < _MAX_SAMPLES:
            meter = setup.accounts[check.account].meter(check.event_name)
            v.samples.append(
                f"{meter.event_name} ({meter.formula}, {meter.window or 'raw'}) "
                f"{check.customer} [{check.window or 'whole range'}]: expected "
                f"{_show(o.expected)}{'' if o.upper is None else f' to {o.upper}'}, observed "
                f"{_show(o.observed)}"
            )
        if check.window is not None or isinstance(o.observed, str):
            continue
        assert isinstance(o.expected, Decimal)  # noqa: S101 - whole-range checks hold numbers
        assert isinstance(o.observed, float)  # noqa: S101
        formula = setup.accounts[check.account].meter(check.event_name).formula
        if formula == "last":
            continue
        upper = o.expected if o.upper is None else o.upper
        if o.observed < float(o.expected):
            v.short += 1
        else:
            v.excess += 1
        if formula == "count":
            v.lost += max(0, int(o.expected) - round(o.observed))
            v.doubled += max(0, round(o.observed) - int(upper))
    return v


def _show(value: object) -> str:
    if isinstance(value, dict):
        shown = {k: float(v) for k, v in sorted(value.items())[:6]}
        more = f" (+{len(value) - 6} more)" if len(value) > 6 else ""
        return f"{shown}{more}"
    return str(value)


def _same(expected: Decimal, observed: float) -> bool:
    return math.isclose(float(expected), observed, rel_tol=1e-12, abs_tol=1e-9)


class _SummaryReader:
    def __init__(
        self, setup: RunSetup, expected: ExpectedTotals, start: int, end: int, connections: int
    ) -> None:
        self._setup = setup
        self._expected = expected
        self._start = start
        self._end = end
        self._encoder = RequestEncoder(setup.base_url)
        host, port = host_and_port(setup.base_url)
        self._clients = [HttpClient(host, port) for _ in range(max(1, connections))]

    def close(self) -> None:
        for client in self._clients:
            client.close()

    async def observe_all(self, checks: list[Check]) -> list[_Observed]:
        queue = iter(checks)

        async def drain(client: HttpClient) -> list[_Observed]:
            return [await self._observe(client, check) for check in queue]

        per_client = await asyncio.gather(*(drain(client) for client in self._clients))
        return [o for observed in per_client for o in observed]

    async def _observe(self, client: HttpClient, check: Check) -> _Observed:
        account = self._setup.accounts[check.account]
        meter = account.meter(check.event_name)
        path = f"{METERS}/{meter.meter_id}/event_summaries"
        query: dict[str, str | int] = {
            "customer": check.customer,
            "start_time": self._start,
            "end_time": self._end,
        }
        try:
            if check.window is None:
                want = self._expected.total(check.series, self._start, self._end)
                page = await self._get(client, account.secret_key, path, query)
                got = float(page["data"][0]["aggregated_value"])
                if not check.ranged:
                    return _Observed(check, _same(want, got), want, got)
                upper = want + self._expected.headroom(check.series)
                within = _same(want, got) or _same(upper, got) or float(want) < got < float(upper)
                return _Observed(check, within, want, got, upper)
            window_s = WINDOW_S[check.window]
            wanted = self._expected.buckets(check.series, window_s, self._start, self._end)
            query |= {"value_grouping_window": check.window, "limit": _PAGE}
            windows: dict[int, float] = {}
            while True:
                page = await self._get(client, account.secret_key, path, query)
                for summary in page["data"]:
                    windows[int(summary["start_time"])] = float(summary["aggregated_value"])
                if not page["has_more"] or not page["data"]:
                    break
                query["starting_after"] = page["data"][-1]["id"]
            matched = wanted.keys() == windows.keys() and all(
                _same(wanted[k], windows[k]) for k in wanted
            )
            return _Observed(check, matched, wanted, windows)
        except (TransportError, SummaryRequestFailed) as exc:
            want_any = self._expected.total(check.series, self._start, self._end)
            return _Observed(check, False, want_any, f"request failed: {exc}")

    async def _get(
        self, client: HttpClient, key: str, path: str, query: dict[str, str | int]
    ) -> dict[str, Any]:
        request = self._encoder.get(path, key, query)
        response: HttpResponse = await client.request(request)
        for _ in range(_RATE_LIMITED_RETRIES):
            if response.status != 429:
                break
            await asyncio.sleep(response.retry_after_s or 1.0)
            response = await client.request(request)
        document = response.json() if response.status == 200 else None
        if not isinstance(document, dict):
            raise SummaryRequestFailed(
                f"{response.status} {response.body[:200].decode(errors='replace')}"
            )
        return document
