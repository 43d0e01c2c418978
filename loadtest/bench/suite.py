"""The fixed benchmark suite: one stack, every measurement, results.json, a plot, BENCHMARKS.md.

Phases, in order (each short but storage, which takes several minutes on its own; the others
together stay well under ten minutes on two cores):

1. the generator's own ceiling against a local no-op server;
2. v2 single events, then v1 events, at maximum rate, each verified against the summaries;
3. the v2 stream at 100 events per request (or "not available" when the server answers 404);
4. ceilings: Kafka producer records/s at ingest's record sizes, PostgreSQL COPY rows/s;
5. the aggregator's fold rate for raw meters and for an overwrite-heavy hour-meter load, with
   one aggregator process and with two in one consumer group; with ``--preload``, then the raw
   fold again after growing the dedupe set and the raw events to each preload size in turn
   (:mod:`loadtest.bench.preload`; the rows stay for the phases after it);
6. freshness (200 → visible in summaries) under light background load;
7. alert notification latency (event sent → ``billing.alert.triggered`` on the events topic)
   under a fixed stream background load;
8. credit balance alert latency (crossing event accepted → ``billing.alert.triggered`` on the
   events topic) under the same stream background load;
9. ``meterflow import`` of a local CSV file (events checked, published, acknowledged);
10. storage per accepted event: 10 million events folded through the real path, each table
    weighed, and disk and memory sizing estimated from it (:mod:`loadtest.bench.storage`,
    :mod:`loadtest.bench.sizing`);
11. peak RSS of every process.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
import uvloop

from loadtest.bench.alert_latency import measure_alert_latency
from loadtest.bench.ceilings import kafka_producer_ceiling, postgres_copy_ceiling
from loadtest.bench.credit_alert_latency import measure_credit_alert_latency, provision_probes
from loadtest.bench.fold_rate import (
    CUSTOMER_DIGITS,
    CUSTOMER_PREFIX,
    REQUEST_EVENTS,
    FoldWorkload,
    build_records,
    measure_fold,
)
from loadtest.bench.freshness import measure_freshness
from loadtest.bench.import_rate import measure_import
from loadtest.bench.invoice_closing import measure_closing
from loadtest.bench.machine import load_average, machine_info
from loadtest.bench.plots import plot_run
from loadtest.bench.preload import (
    DEFAULT_RAW_RATIO,
    NotEnoughDisk,
    Preloader,
    PreloadTenant,
    parse_sizes,
)
from loadtest.bench.preview_latency import measure_previews
from loadtest.bench.processes import mib, peak_rss_kib, peak_rss_tree_kib
from loadtest.bench.sizing import DEFAULT_SERIES, sizing, sizing_markdown
from loadtest.bench.stack import (
    INVOICE_GRACE_ENV,
    BenchStack,
    bench_stack,
    extra_ingest_processes,
    start_ready,
    stop_all,
)
from loadtest.bench.storage import measure_storage, measured_bytes
from loadtest.bench.tables import STREAM_INGEST_PHASE, benchmarks_markdown, result_rows
from loadtest.generator import run_load
from loadtest.noop_server import running_noop_server
from loadtest.plan import (
    Bounds,
    LoadConfig,
    MeterCounts,
    Mode,
    RunSetup,
    TrafficMix,
    meter_shapes,
    new_run_id,
)
from loadtest.provision import create_accounts, noop_setup, provision
from loadtest.stream_sessions import StreamUnavailable
from loadtest.verify import verify_run
from meterflow.kafka.topics import ensure_topics, meter_events_topic, topic_specs
from meterflow.meters import Formula
from meterflow.records.meter_events import AcceptedEvent, EventsRecord, encode
from meterflow.windows import TimeWindow as Window

REPO = Path(__file__).resolve().parents[2]
COMMAND = "make bench"
MIX = TrafficMix(duplicate_ratio=0.01, invalid_ratio=0.01, late_ratio=0.05)
LOAD_METERS = MeterCounts(raw=2, windowed=2)
RAW_SHAPES: list[tuple[Formula, Window | None]] = [("sum", None), ("count", None)]
# (name, meter shapes, customers, every event in one window)
FOLD_WORKLOADS: list[tuple[str, list[tuple[Formula, Window | None]], int, bool]] = [
    ("raw", RAW_SHAPES, 2000, False),
    ("overwrite", [("sum", "hour"), ("count", "hour")], 50, True),
]


@dataclass(frozen=True, slots=True)
class SuitePlan:
    noop_s: float = 10.0
    noop_stream_s: float = 5.0
    v2_s: float = 20.0
    v1_s: float = 15.0
    stream_s: float = 15.0
    freshness_s: float = 20.0
    freshness_probes: int = 300
    freshness_probers: int = 4
    freshness_poll_s: float = 0.02
    background_rate: float = 200.0
    alert_s: float = 25.0
    alert_probes: int = 300
    alert_probers: int = 4
    alert_probe_interval_s: float = 0.2
    alert_background_rate: float = 20_000.0
    credit_alert_s: float = 25.0
    credit_alert_probes: int = 300
    preview_s: float = 25.0
    closing_subscriptions: int = 10_000
    closing_lead_s: float = 30.0
    closing_deadline_s: float = 180.0
    # A million events: folds of a few seconds measure mostly start-up and the group join.
    fold_events: int = 1_000_000
    fold_deadline_s: float = 120.0
    fold_aggregators: tuple[int, ...] = (1, 2)
    # Preloaded identifiers before each extra raw fold; raw events are raw_ratio times as many.
    preload: tuple[int, ...] = ()
    preload_raw_ratio: float = DEFAULT_RAW_RATIO
    preload_customers: int = 100_000
    storage_events: int = 10_000_000
    storage_customers: int = 500
    storage_deadline_s: float = 1800.0
    sizing_series: int = DEFAULT_SERIES
    kafka_records: int = 100_000
    kafka_s: float = 10.0
    copy_rows: int = 200_000
    copy_s: float = 10.0
    workers: int = 2
    connections: int = 32
    stream_connections: int = 8
    # The stream measured again with this many ingest processes sharing the API port (1: not).
    stream_ingest: int = 2
    accounts: int = 2
    customers: int = 500
    verify_timeout_s: float = 90.0
    import_lines: int = 1_000_000


PHASES = (
    "noop",
    "v2",
    "v1",
    "stream",
    "ceilings",
    "fold",
    "freshness",
    "alerts",
    "credit_alerts",
    "preview",
    "closing",
    "import",
    "storage",
)

QUICK = SuitePlan(
    noop_s=3.0,
    noop_stream_s=2.0,
    v2_s=4.0,
    v1_s=3.0,
    stream_s=3.0,
    freshness_s=4.0,
    freshness_probes=40,
    background_rate=100.0,
    alert_s=4.0,
    alert_probes=20,
    alert_background_rate=2_000.0,
    credit_alert_s=4.0,
    credit_alert_probes=20,
    preview_s=4.0,
    closing_subscriptions=500,
    closing_lead_s=10.0,
    fold_events=10_000,
    kafka_records=10_000,
    kafka_s=3.0,
    copy_rows=20_000,
    copy_s=3.0,
    customers=100,
    import_lines=100_000,
    storage_events=20_000,
    storage_customers=100,
)


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Suite:
    def __init__(self, stack: BenchStack, plan: SuitePlan) -> None:
        self._stack = stack
        self._plan = plan
        self.phases: dict[str, Any] = {}

    async def run(self, only: Sequence[str] = ()) -> dict[str, Any]:
        """Every phase in order, or just those named in ``only`` (see :data:`PHASES`)."""
        steps: dict[str, Callable[[], Awaitable[None]]] = {
            "noop": self._noop,
            "v2": lambda: self._load("v2", "v2", self._plan.v2_s),
            "v1": lambda: self._load("v1", "v1", self._plan.v1_s),
            "stream": self._stream,
            "ceilings": self._ceilings,
            "fold": self._folds,
            "freshness": self._freshness,
            "alerts": self._alerts,
            "credit_alerts": self._credit_alerts,
            "preview": self._previews,
            "closing": self._closing,
            "import": self._import,
            "storage": self._storage,
        }
        for name, step in steps.items():
            if not only or name in only:
                await step()
        if self._plan.preload and (not only or "fold" in only):
            # Last: every other phase (the storage phase's bytes per event above all) then
            # measures a database without the preload in it.
            await self._preloaded_folds()
        return self.phases

    def _config(self, mode: Mode, duration_s: float, **changes: Any) -> LoadConfig:
        config = LoadConfig(
            bounds=Bounds(duration_s=duration_s),
            mode=mode,
            workers=self._plan.workers,
            connections=self._plan.connections,
            mix=MIX,
        )
        return replace(config, **changes)

    async def _setup(
        self, accounts: int, shapes: Sequence[tuple[Formula, Window | None]], customers: int
    ) -> RunSetup:
        run_id = new_run_id()
        made = await create_accounts(self._stack.database_url, accounts, run_id)
        keys = [account.secret_key for account in made]
        return await provision(self._stack.base_url, keys, shapes, customers, run_id)

    async def _noop(self) -> None:
        plan = self._plan
        for name, mode, duration_s, changes in (
            ("noop", "v2", plan.noop_s, {}),
            (
                "noop_stream",
                "stream",
                plan.noop_stream_s,
                {"connections": plan.stream_connections, "batch_size": REQUEST_EVENTS},
            ),
        ):
            say(f"generator ceiling against a no-op server, {mode}, {duration_s:.0f} s")
            config = self._config(
                cast(Mode, mode), duration_s, mix=TrafficMix(), track_totals=False, **changes
            )
            with running_noop_server() as url:
                setup = noop_setup(url, new_run_id(), plan.customers)
                result = await run_load(config, setup, label=name)
            self.phases[name] = {"load": result.report}

    async def _load(self, name: str, mode: Mode, duration_s: float, **changes: Any) -> None:
        plan = self._plan
        say(f"{name}: max rate for {duration_s:.0f} s, then verification")
        setup = await self._setup(plan.accounts, meter_shapes(LOAD_METERS), plan.customers)
        result = await run_load(self._config(mode, duration_s, **changes), setup, label=name)
        phase: dict[str, Any] = {"available": True, "load": result.report}
        if result.expected is not None:
            verification = await verify_run(
                setup,
                result.expected,
                unresolved=result.unresolved,
                timeout_s=plan.verify_timeout_s,
            )
            say(verification.text())
            phase["verification"] = verification.as_dict()
        self.phases[name] = phase

    async def _stream(self) -> None:
        plan = self._plan
        try:
            await self._load(
                "stream",
                "stream",
                plan.stream_s,
                connections=plan.stream_connections,
                batch_size=REQUEST_EVENTS,
            )
        except StreamUnavailable as exc:
            say(str(exc))
            self.phases["stream"] = {"available": False, "reason": str(exc)}
            return
        if plan.stream_ingest < 2:
            return
        # The kernel spreads new connections over the processes, so each gets as many.
        extra = extra_ingest_processes(self._stack, plan.stream_ingest - 1)
        try:
            await start_ready(extra)
            await self._load(
                STREAM_INGEST_PHASE,
                "stream",
                plan.stream_s,
                connections=plan.stream_connections * plan.stream_ingest,
                batch_size=REQUEST_EVENTS,
            )
            self.phases[STREAM_INGEST_PHASE]["ingest_processes"] = plan.stream_ingest
        finally:
            await asyncio.to_thread(stop_all, extra)

    async def _ceilings(self) -> None:
        plan, stack = self._plan, self._stack
        launcher = stack.settings.launcher
        single = _single_event_record_size()
        sample = build_records(_fold_workload("sample", "acct_sample", 1, 5000), int(time.time()))
        stream_bytes = sum(len(v) for _, v in sample.records) // len(sample.records)
        events_per_record = sample.events / len(sample.records)
        for name, size in (("single", single), ("stream", stream_bytes)):
            say(f"Kafka producer ceiling, {size}-byte records")
            prefix = f"bench-ceiling-{name}-{new_run_id()}."
            await ensure_topics(stack.bootstrap, topic_specs(prefix))
            ceiling = await kafka_producer_ceiling(
                launcher.kafka_version,
                launcher.cache_dir,
                stack.bootstrap,
                meter_events_topic(prefix),
                record_size=size,
                records=plan.kafka_records,
                duration_s=plan.kafka_s,
            )
            if name == "stream":
                ceiling["events_per_record"] = round(events_per_record, 2)
            self.phases[f"kafka_ceiling_{name}"] = ceiling
        say("PostgreSQL COPY ceiling")
        self.phases["postgres_copy_ceiling"] = await postgres_copy_ceiling(
            stack.database_url, rows=plan.copy_rows, chunk=5000, duration_s=plan.copy_s
        )

    async def _fold_account(
        self, shapes: list[tuple[Formula, Window | None]]
    ) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        """A fresh account with meters of these shapes: (run id, account id, (meter id, event
        name) pairs)."""
        run_id = new_run_id()
        (account,) = await create_accounts(self._stack.database_url, 1, run_id)
        setup = await provision(self._stack.base_url, [account.secret_key], shapes, 1, run_id)
        meters = tuple((m.meter_id, m.event_name) for m in setup.accounts[0].meters)
        return run_id, account.account_id, meters

    async def _folds(self) -> None:
        plan = self._plan
        for name, shapes, customers, one_window in FOLD_WORKLOADS:
            for aggregators in plan.fold_aggregators:
                run_id, account_id, meters = await self._fold_account(shapes)
                label = name if aggregators == 1 else f"{name}-{aggregators}-aggregators"
                workload = FoldWorkload(
                    label, account_id, meters, customers, plan.fold_events, one_window
                )
                say(
                    f"aggregator fold rate, {name}, {aggregators} aggregator process(es): "
                    f"{plan.fold_events:,} events"
                )
                self.phases[f"fold_{label.replace('-', '_')}"] = await measure_fold(
                    self._stack,
                    workload,
                    f"bench-fold-{label}-{run_id}.",
                    plan.fold_deadline_s,
                    aggregators=aggregators,
                )

    async def _preloaded_folds(self) -> None:
        """The raw fold (one aggregator) after growing the preload to each size in turn, all in
        one account that holds the whole preload (see :mod:`loadtest.bench.preload`)."""
        plan, stack = self._plan, self._stack
        run_id, account_id, meters = await self._fold_account(RAW_SHAPES)
        tenant = PreloadTenant(
            account_id,
            tuple(meter_id for meter_id, _ in meters),
            plan.preload_customers,
            CUSTOMER_PREFIX,
            CUSTOMER_DIGITS,
        )
        preloader = Preloader(
            stack.database_url,
            tenant,
            say,
            raw_ratio=plan.preload_raw_ratio,
            data_dir=stack.settings.launcher.data_dir,
        )
        steps: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        for size in plan.preload:
            try:
                load = await preloader.grow_to(size)
            except NotEnoughDisk as exc:
                say(f"{exc}: the preload stops here")
                skipped = [
                    {"identifiers": n, "reason": str(exc)} for n in plan.preload if n >= size
                ]
                break
            label = f"raw-preload-{size}"
            workload = FoldWorkload(label, account_id, meters, 2000, plan.fold_events, False)
            say(f"aggregator fold rate, raw, on {size:,} preloaded identifiers")
            fold = await measure_fold(
                stack, workload, f"bench-fold-{label}-{run_id}.", plan.fold_deadline_s
            )
            # Again with the hot indexes in memory, as in a fold that has been running.
            warm_up = await preloader.warm_up()
            workload = replace(workload, name=f"{label}-warm")
            say(f"aggregator fold rate, raw, on {size:,} preloaded identifiers, warm")
            warm = await measure_fold(
                stack, workload, f"bench-fold-{label}-warm-{run_id}.", plan.fold_deadline_s
            )
            steps.append({"identifiers": size, "raw_events": preloader.raw_events, "load": load,
                          "fold": fold, "warm_up": warm_up, "fold_warm": warm})  # fmt: skip
        # The empty database: the first step if it preloads nothing, else the plain raw fold.
        empty = steps[0]["fold"] if plan.preload[0] == 0 else self.phases.get("fold_raw", {})
        baseline = empty.get("events_per_s")
        for step in steps:
            for fold_key, ratio_key in (("fold", "ratio_to_empty"), ("fold_warm", "warm_ratio")):
                rate = step[fold_key]["events_per_s"]
                step[ratio_key] = round(rate / baseline, 3) if rate and baseline else None
        self.phases["fold_preload"] = {
            "raw_ratio": plan.preload_raw_ratio,
            "customers": plan.preload_customers,
            "meters": len(meters),
            "empty_events_per_s": baseline,
            "steps": steps,
            "skipped": skipped,
        }

    async def _freshness(self) -> None:
        plan = self._plan
        say(f"freshness probes for {plan.freshness_s:.0f} s under background load")
        probe_setup = await self._setup(1, [("count", None)], 1)
        background_setup = await self._setup(
            plan.accounts, meter_shapes(LOAD_METERS), plan.customers
        )
        background = self._config(
            "v2",
            plan.freshness_s + 1.0,
            rate=plan.background_rate,
            workers=1,
            connections=8,
        )
        loaded, probed = await asyncio.gather(
            run_load(background, background_setup, label="background"),
            measure_freshness(
                self._stack.base_url,
                probe_setup.accounts[0],
                probers=plan.freshness_probers,
                duration_s=plan.freshness_s,
                max_probes=plan.freshness_probes,
                poll_s=plan.freshness_poll_s,
            ),
        )
        self.phases["freshness"] = {**probed, "background": loaded.report}

    async def _stream_background(self, duration_s: float) -> tuple[LoadConfig, RunSetup]:
        """Stream load at the alert phase's rate for ``duration_s`` (plus 2 s of margin), on
        accounts of its own, with no totals kept (nothing verifies it)."""
        plan = self._plan
        setup = await self._setup(plan.accounts, meter_shapes(LOAD_METERS), plan.customers)
        config = self._config(
            "stream",
            duration_s + 2.0,
            rate=plan.alert_background_rate,
            connections=plan.stream_connections,
            batch_size=REQUEST_EVENTS,
            track_totals=False,
        )
        return config, setup

    async def _alerts(self) -> None:
        plan = self._plan
        say(
            f"alert notification latency for {plan.alert_s:.0f} s under "
            f"{plan.alert_background_rate:,.0f} events/s of stream load"
        )
        probe_setup = await self._setup(1, [("count", None)], 1)
        background, background_setup = await self._stream_background(plan.alert_s)
        loaded, probed = await asyncio.gather(
            run_load(background, background_setup, label="alert background"),
            measure_alert_latency(
                self._stack.base_url,
                self._stack.bootstrap,
                self._stack.settings.topic_prefix,
                probe_setup.accounts[0],
                probers=plan.alert_probers,
                duration_s=plan.alert_s,
                max_probes=plan.alert_probes,
                interval_s=plan.alert_probe_interval_s,
            ),
        )
        self.phases["alerts"] = {**probed, "background": loaded.report}

    async def _credit_alerts(self) -> None:
        plan, stack = self._plan, self._stack
        say(
            f"credit balance alert latency for {plan.credit_alert_s:.0f} s under "
            f"{plan.alert_background_rate:,.0f} events/s of stream load"
        )
        (account,) = await create_accounts(stack.database_url, 1, new_run_id())
        customers = await provision_probes(stack.base_url, account, plan.credit_alert_probes)
        background, background_setup = await self._stream_background(plan.credit_alert_s)
        loaded, probed = await asyncio.gather(
            run_load(background, background_setup, label="credit alert background"),
            measure_credit_alert_latency(
                stack.base_url,
                stack.database_url,
                stack.bootstrap,
                stack.settings.topic_prefix,
                account=account,
                customers=customers,
                probers=plan.alert_probers,
                duration_s=plan.credit_alert_s,
                interval_s=plan.alert_probe_interval_s,
            ),
        )
        self.phases["credit_alerts"] = {**probed, "background": loaded.report}

    async def _previews(self) -> None:
        plan = self._plan
        say(
            f"invoice previews for {plan.preview_s:.0f} s under "
            f"{plan.alert_background_rate:,.0f} events/s of stream load"
        )
        (account,) = await create_accounts(self._stack.database_url, 1, new_run_id())
        background, background_setup = await self._stream_background(plan.preview_s)
        loaded, measured = await asyncio.gather(
            run_load(background, background_setup, label="preview background"),
            measure_previews(
                self._stack.base_url, self._stack.database_url, account, plan.preview_s
            ),
        )
        self.phases["preview"] = {**measured, "background": loaded.report}

    async def _closing(self) -> None:
        plan = self._plan
        grace_s = int(self._stack.env[INVOICE_GRACE_ENV])
        say(
            f"closing {plan.closing_subscriptions:,} subscriptions at one period end "
            f"({grace_s} s grace period)"
        )
        (account,) = await create_accounts(self._stack.database_url, 1, new_run_id())
        self.phases["closing"] = await measure_closing(
            self._stack.base_url,
            self._stack.database_url,
            account,
            subscriptions=plan.closing_subscriptions,
            grace_s=grace_s,
            lead_s=plan.closing_lead_s,
            deadline_s=plan.closing_deadline_s,
        )

    async def _import(self) -> None:
        lines = self._plan.import_lines
        say(f"meterflow import of a {lines:,}-line CSV file")
        self.phases["import"] = await measure_import(self._stack, lines)

    async def _storage(self) -> None:
        plan = self._plan
        events = plan.storage_events
        say(
            f"storage per accepted event: {events:,} events over {plan.accounts} accounts x "
            f"{len(meter_shapes(LOAD_METERS))} meters x {plan.storage_customers} customers"
        )
        run_id = new_run_id()
        made = await create_accounts(self._stack.database_url, plan.accounts, run_id)
        setup = await provision(
            self._stack.base_url,
            [account.secret_key for account in made],
            meter_shapes(LOAD_METERS),
            1,
            run_id,
        )
        share = -(-events // plan.accounts)
        workloads = [
            FoldWorkload(
                f"storage-{run_id}-{n}",
                account.account_id,
                tuple((m.meter_id, m.event_name) for m in planned.meters),
                plan.storage_customers,
                min(share, events - n * share),
                one_window=False,
            )
            for n, (account, planned) in enumerate(zip(made, setup.accounts, strict=True))
        ]
        phase = await measure_storage(
            self._stack, workloads, f"bench-storage-{run_id}.", plan.storage_deadline_s, say
        )
        phase["sizing"] = sizing(measured_bytes(phase), series=plan.sizing_series)
        self.phases["storage"] = phase

    def peak_rss(self) -> dict[str, float | None]:
        stack = self._stack
        postgres, processes = (
            peak_rss_tree_kib(stack.postgres_pid) if stack.postgres_pid else (None, 0)
        )
        peaks: dict[str, float | None] = {
            "ingest": mib(peak_rss_kib(stack.ingest.pid)) if stack.ingest.pid else None,
            "aggregator": mib(peak_rss_kib(stack.aggregator.pid)) if stack.aggregator.pid else None,
            "alerts": mib(peak_rss_kib(stack.alerts.pid)) if stack.alerts.pid else None,
        }
        for name in ("fold_raw", "fold_overwrite"):
            if name in self.phases:
                peaks[f"aggregator ({name.replace('_', ' ')})"] = self.phases[name]["peak_rss_mib"]
        peaks["Kafka"] = mib(peak_rss_kib(stack.kafka_pid)) if stack.kafka_pid else None
        peaks[f"PostgreSQL ({processes} processes, summed)"] = mib(postgres)
        return peaks


def _single_event_record_size() -> int:
    """Bytes of the record ingest writes for one v2 event with typical field lengths."""
    event = AcceptedEvent(
        "mtr_test_" + "x" * 24, "lt_00000000_0_sum_hour", "run0000-12-123456",
        "cus_lt00000000000123", "123.45", int(time.time()),
    )  # fmt: skip
    record = EventsRecord("acct_" + "x" * 16, False, int(time.time() * 1000), "b" * 32, (event,))
    return len(encode(record))


def _fold_workload(name: str, account_id: str, meters: int, events: int) -> FoldWorkload:
    ids = tuple((f"mtr_test_{n:024d}", f"bench_{n}") for n in range(meters))
    return FoldWorkload(name, account_id, ids, 2000, events, one_window=False)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _notes(plan: SuitePlan) -> str:
    return (
        "Per-account rate limits are off during the run (METERFLOW_RATE_LIMIT_*=0), so the "
        "max-rate rows measure the pipeline. Load phases use "
        f"{plan.workers} generator processes x {plan.connections} keep-alive connections, "
        f"{plan.accounts} accounts x 4 meters (2 raw, 2 pre-aggregated) x {plan.customers} "
        "customers, with 1 % repeated identifiers, 1 % invalid events and 5 % events back-dated "
        "up to 34 days; each is checked against the event summaries afterwards. All processes, "
        "the generator included, share the machine's cores with other users' work (see loadavg)."
    )


def _write_outputs(results: dict[str, Any], out_dir: Path, *, whole_suite: bool) -> None:
    (out_dir / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    if sized := results["phases"].get("storage", {}).get("sizing"):
        (out_dir / "sizing.md").write_text(sizing_markdown(sized))
        say(f"wrote {out_dir / 'sizing.md'}")
    if not whole_suite:  # BENCHMARKS.md always shows a complete run
        say(f"wrote {out_dir / 'results.json'}")
        return
    plot = plot_run(results, out_dir / "bench.png")
    say(f"plot: {plot}" if plot else "no plot: matplotlib is not installed (the bench extra)")
    (REPO / "BENCHMARKS.md").write_text(benchmarks_markdown(results))
    say(f"wrote {out_dir / 'results.json'} and {REPO / 'BENCHMARKS.md'}")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    parser.add_argument("--quick", action="store_true", help="a much shorter suite, for trials")
    parser.add_argument(
        "--only",
        action="append",
        choices=PHASES,
        default=[],
        help="run just this phase (repeatable); BENCHMARKS.md is then left as it is",
    )
    parser.add_argument("--fold-events", type=int, help="events per fold-rate workload")
    parser.add_argument(
        "--preload",
        type=_sizes,
        metavar="N[,N...]",
        help="after the fold phase's rows, grow the dedupe set to N identifiers (48 h of receipts) "
        "and the raw events to N x the raw ratio (35 days) and fold the raw workload again; a "
        "comma-separated list grows to each size in turn (0 measures the database as it is)",
    )
    parser.add_argument(
        "--preload-raw-ratio",
        type=float,
        default=DEFAULT_RAW_RATIO,
        help="raw events preloaded per preloaded identifier (default %(default)s)",
    )
    parser.add_argument(
        "--preload-customers", type=int, help="customers the preload spreads over (100,000)"
    )
    parser.add_argument("--storage-events", type=int, help="events the storage phase folds")
    parser.add_argument(
        "--sizing-series",
        type=int,
        help=f"active (meter, customer) series the sizing assumes ({DEFAULT_SERIES:,})",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else SuitePlan()
    plan = replace(plan, preload_raw_ratio=args.preload_raw_ratio)
    for name in ("fold_events", "preload", "preload_customers", "storage_events", "sizing_series"):
        if value := getattr(args, name):
            plan = replace(plan, **{name: value})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir: Path = args.out / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(REPO) | {"loadavg_before": load_average()}
    started = time.time()
    scratch = Path(tempfile.mkdtemp(prefix="meterflow-bench-"))
    try:
        with bench_stack(scratch / "data", out_dir / "logs", say) as stack:
            suite = Suite(stack, plan)
            phases = uvloop.run(suite.run(args.only))
            peak_rss = suite.peak_rss()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    machine["loadavg_after"] = load_average()
    results: dict[str, Any] = {
        "command": COMMAND,
        "argv": " ".join([_shown(Path(sys.executable)), "-m", "loadtest.bench", *sys.argv[1:]]),
        "machine": machine,
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "duration_s": round(time.time() - started, 1),
        "results_dir": _shown(out_dir),
        "notes": _notes(plan)
        + (" Quick trial run (--quick)." if args.quick else "")
        + (" The preloaded folds ran last, after every other phase." if plan.preload else ""),
        "rss_note": "VmHWM from /proc/<pid>/status at the end of the run; PostgreSQL sums the "
        "postmaster and its children, which counts shared buffers once per process.",
        "phases": phases,
        "peak_rss_mib": peak_rss,
    }
    _write_outputs(results, out_dir, whole_suite=not args.only)
    for row in result_rows(results):
        print(" | ".join(row))
    failed = [
        name
        for name, phase in phases.items()
        if isinstance(phase, dict) and phase.get("verification", {}).get("ok") is False
    ]
    return 1 if failed else 0
