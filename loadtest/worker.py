"""One generator worker: its lanes (a connection each), pacing, retries, and what it counted.

A lane sends one request at a time for its own customers, so the order in which its requests are
answered is the order in which the server received them. An unconfirmed event (503, other 5xx,
429, a timeout or a dropped connection) is resent unchanged, same identifier, as the API asks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loadtest.client import HttpClient, HttpResponse, TransportError
from loadtest.expected_totals import ExpectedTotals, MeterShape
from loadtest.outcomes import Snapshot, Tally, WorkerResult
from loadtest.plan import LoadConfig, RunSetup
from loadtest.stream_sessions import SESSION_EXPIRED, StreamSessions, StreamUnavailable
from loadtest.traffic import LaneTraffic, PlannedEvent
from loadtest.wire import RequestEncoder, host_and_port

_RETRY_GRACE_S = 30.0  # how long past the end of the run unconfirmed events are still resent
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 2.0
_RETRY_AFTER_MAX_S = 5.0
_MAX_SAMPLES = 10
DUPLICATE = "duplicate_meter_event"


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    config: LoadConfig
    setup: RunSetup
    worker: int
    first_lane: int
    lanes: int  # this worker's lanes: first_lane .. first_lane + lanes - 1
    rate: float | None  # this worker's share of the rate
    count: int | None  # this worker's share of the events


def split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def worker_plans(config: LoadConfig, setup: RunSetup) -> list[WorkerPlan]:
    """Lanes, rate and count shared out between ``max(1, config.workers)`` workers."""
    workers = max(1, config.workers)
    lanes_total = min(config.lanes, setup.customers)
    lanes = split_evenly(lanes_total, workers)
    counts = split_evenly(config.bounds.count, workers) if config.bounds.count else None
    plans = []
    first = 0
    for w in range(workers):
        if lanes[w] == 0:
            continue
        rate = config.rate * lanes[w] / lanes_total if config.rate else None
        plans.append(
            WorkerPlan(config, setup, w, first, lanes[w], rate, counts[w] if counts else None)
        )
        first += lanes[w]
    return plans


class Pacer:
    """Hands out send slots: at a fixed rate or as fast as asked, within the run's bounds."""

    def __init__(
        self, start: float, deadline: float | None, rate: float | None, quota: int | None
    ) -> None:
        self._start = start
        self._deadline = deadline
        self._rate = rate
        self._remaining = quota
        self._issued = 0

    async def take(self, want: int) -> int:
        """How many events the caller may send now (0: the run is over)."""
        n = want if self._remaining is None else min(want, self._remaining)
        if n <= 0:
            return 0
        if self._remaining is not None:
            self._remaining -= n
        now = time.time()
        if self._rate is not None:
            slot = self._start + self._issued / self._rate
            self._issued += n
            if self._deadline is not None and slot >= self._deadline:
                return 0
            if slot > now:
                await asyncio.sleep(slot - now)
        elif self._deadline is not None and now >= self._deadline:
            return 0
        return n


@dataclass(slots=True)
class _Lane:
    traffic: LaneTraffic
    client: HttpClient
    last_ack_ms: int = 0  # when the last request with order-sensitive events was answered
    token: str | None = None  # the stream session token of the lane's last request


@dataclass(slots=True)
class _Counters:
    window: Tally = field(default_factory=Tally)
    total: Tally = field(default_factory=Tally)
    samples: list[str] = field(default_factory=list)

    def sample(self, text: str) -> None:
        if len(self.samples) < _MAX_SAMPLES:
            self.samples.append(text)


class Worker:
    def __init__(self, plan: WorkerPlan, sink: Callable[[Snapshot], None]) -> None:
        self._plan = plan
        self._config = plan.config
        self._sink = sink
        self._encoder = RequestEncoder(plan.setup.base_url)
        self._host, self._port = host_and_port(plan.setup.base_url)
        setup = plan.setup
        meters = {
            (i, m.event_name): MeterShape(m.formula, m.window)
            for i, account in enumerate(setup.accounts)
            for m in account.meters
        }
        self._order_sensitive = {
            (i, m.event_name)
            for i, account in enumerate(setup.accounts)
            for m in account.meters
            if m.order_sensitive
        }
        self._expected = ExpectedTotals.for_meters(meters) if self._config.track_totals else None
        self._unresolved: set[tuple[int, str, str]] = set()
        self._counters = _Counters()
        self._lanes: list[_Lane] = []
        self._sessions: StreamSessions | None = None
        self._session_client: HttpClient | None = None
        self._deadline: float | None = None

    def _client(self) -> HttpClient:
        return HttpClient(self._host, self._port, self._config.request_timeout_s)

    async def prepare(self) -> None:
        """Open every connection (and stream sessions) before the clock starts."""
        plan = self._plan
        for lane in range(plan.first_lane, plan.first_lane + plan.lanes):
            traffic = LaneTraffic(
                plan.setup,
                self._config.mix,
                lane=lane,
                lanes=min(self._config.lanes, plan.setup.customers),
                seed=self._config.seed,
            )
            self._lanes.append(_Lane(traffic, self._client()))
        await asyncio.gather(*(lane.client.connect() for lane in self._lanes))
        if self._config.mode == "stream":
            self._session_client = self._client()
            self._sessions = StreamSessions(plan.setup, self._encoder, self._session_client)
            await self._sessions.open_all()

    async def run(self, start_at: float) -> WorkerResult:
        bounds = self._config.bounds
        self._deadline = start_at + bounds.duration_s if bounds.duration_s else None
        pacer = Pacer(start_at, self._deadline, self._plan.rate, self._plan.count)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started = time.time()
        reporter = asyncio.create_task(self._report_every_second(start_at))
        try:
            await asyncio.gather(*(self._drive(lane, pacer) for lane in self._lanes))
        finally:
            reporter.cancel()
            self.close()
        self._flush(int(time.time() - start_at))
        if self._expected is not None:
            self._expected.forget_identifiers()
        return WorkerResult(
            worker=self._plan.worker,
            tally=self._counters.total,
            expected=self._expected,
            unresolved=self._unresolved,
            samples=self._counters.samples,
            started_at=started,
            finished_at=time.time(),
        )

    def close(self) -> None:
        for lane in self._lanes:
            lane.client.close()
        if self._session_client is not None:
            self._session_client.close()

    async def _report_every_second(self, start_at: float) -> None:
        second = 0
        while True:
            second += 1
            await asyncio.sleep(max(0.0, start_at + second - time.time()))
            self._flush(second - 1)

    def _flush(self, second: int) -> None:
        window, self._counters.window = self._counters.window, Tally()
        self._counters.total.merge(window)
        self._sink(Snapshot(self._plan.worker, second, window))

    async def _drive(self, lane: _Lane, pacer: Pacer) -> None:
        stream = self._config.mode == "stream"
        want = self._config.batch_size if stream else 1
        while n := await pacer.take(want):
            now_s = int(time.time())
            if stream:
                events = lane.traffic.next_batch(now_s, n)
            else:
                events = [lane.traffic.next_event(now_s)]
            ordered = any((e.account, e.event_name) in self._order_sensitive for e in events)
            # Receipt is stamped in milliseconds; a later event of the same series gets a later
            # stamp, never a tie, which several ingest processes would break arbitrarily.
            wait_s = (lane.last_ack_ms + 1) / 1000 - time.time()
            if ordered and wait_s > 0:
                await asyncio.sleep(wait_s)
            self._counters.window.events += len(events)
            response, attempts = await self._deliver(lane, events)
            if ordered:
                lane.last_ack_ms = int(time.time() * 1000)
            self._settle(lane, events, response, attempts)

    async def _encode(self, lane: _Lane, events: Sequence[PlannedEvent]) -> bytes:
        first = events[0]
        key = self._plan.setup.accounts[first.account].secret_key
        if self._config.mode == "v2":
            return self._encoder.v2_event(key, first)
        if self._config.mode == "v1":
            return self._encoder.v1_event(key, first)
        assert self._sessions is not None  # noqa: S101 - prepare() opened them
        lane.token = await self._sessions.token(first.account)
        return self._encoder.stream_batch(lane.token, events)

    async def _deliver(
        self, lane: _Lane, events: Sequence[PlannedEvent]
    ) -> tuple[HttpResponse | None, int]:
        """Send until a definite answer (anything but 5xx, 429 or no answer), within bounds."""
        tally = self._counters.window
        attempts = 0
        backoff = _BACKOFF_FIRST_S
        while True:
            attempts += 1
            request = await self._encode(lane, events)
            sent = time.perf_counter()
            response: HttpResponse | None
            try:
                response = await lane.client.request(request)
            except TransportError as exc:
                response = None
                self._counters.sample(f"transport error: {exc}")
            tally = self._counters.window  # the reporter may have swapped it meanwhile
            tally.requests += 1
            if response is None:
                tally.status("transport")
            else:
                tally.latency.record_s(time.perf_counter() - sent)
                tally.status(str(response.status))
                if await self._definite(lane, response, events):
                    return response, attempts
            late = self._deadline is not None and time.time() > self._deadline + _RETRY_GRACE_S
            if attempts >= self._config.max_attempts or late:
                return None, attempts
            tally.outcome("retried")
            retry_after = response.retry_after_s if response is not None else None
            await asyncio.sleep(min(_RETRY_AFTER_MAX_S, max(backoff, retry_after or 0.0)))
            backoff = min(_BACKOFF_MAX_S, backoff * 2)

    async def _definite(
        self, lane: _Lane, response: HttpResponse, events: Sequence[PlannedEvent]
    ) -> bool:
        if response.status >= 500 or response.status == 429:
            return False
        if self._config.mode != "stream":
            return True
        if response.status == 404:
            raise StreamUnavailable(
                "stream endpoint not available: POST /v2/billing/meter_event_stream answered 404"
            )
        if response.status == 401 and response.error_code() == SESSION_EXPIRED:
            assert self._sessions is not None  # noqa: S101 - stream mode
            await self._sessions.renew(events[0].account, stale=lane.token)
            return False
        return True

    def _settle(
        self,
        lane: _Lane,
        events: Sequence[PlannedEvent],
        response: HttpResponse | None,
        attempts: int,
    ) -> None:
        if response is None:
            self._counters.window.outcome("unresolved", len(events))
            for e in events:
                if e.kind == "new" and e.customer is not None:
                    series = (e.account, e.event_name, e.customer)
                    self._unresolved.add(series)
                    if self._expected is not None:
                        self._expected.unconfirm(series, e.value)
        elif self._config.mode == "stream":
            self._settle_batch(lane, events, response)
        else:
            (event,) = events
            self._settle_single(lane, event, response, attempts)

    def _settle_batch(
        self, lane: _Lane, events: Sequence[PlannedEvent], response: HttpResponse
    ) -> None:
        """A stream batch is accepted whole; its events are validated asynchronously."""
        tally = self._counters.window
        if not 200 <= response.status < 300:
            tally.outcome("rejected_unexpected", len(events))
            self._counters.sample(f"stream batch answered {_describe(response)}")
            return
        for e in events:
            if e.kind == "new":
                self._accept(lane, e)
            else:
                tally.outcome("duplicate_sent" if e.kind == "duplicate" else "invalid_sent")

    def _settle_single(
        self, lane: _Lane, e: PlannedEvent, response: HttpResponse, attempts: int
    ) -> None:
        tally = self._counters.window
        if 200 <= response.status < 300:
            if e.kind == "new":
                self._accept(lane, e)
            elif e.kind == "duplicate":
                tally.outcome("duplicate_accepted")
            else:
                tally.outcome("invalid_accepted")
                self._counters.sample(f"invalid ({e.invalid_reason}) event accepted: {e}")
            return
        code = response.error_code()
        if code == DUPLICATE and e.kind == "duplicate":
            tally.outcome("duplicate_rejected")
        elif code == DUPLICATE and e.kind == "new" and attempts > 1:
            self._accept(lane, e)  # an earlier, unconfirmed attempt landed
        elif e.kind == "invalid" and 400 <= response.status < 500:
            tally.outcome("invalid_rejected")
        else:
            tally.outcome("rejected_unexpected")
            self._counters.sample(f"{e.kind} event {e.identifier} got {_describe(response)}")

    def _accept(self, lane: _Lane, event: PlannedEvent) -> None:
        self._counters.window.outcome("accepted")
        lane.traffic.acknowledged(event)
        if self._expected is not None and event.customer is not None:
            series = (event.account, event.event_name, event.customer)
            self._expected.acknowledge(series, event.identifier, event.value, event.timestamp_s)


def _describe(response: HttpResponse) -> str:
    return f"{response.status} {response.body[:200].decode(errors='replace')}"
