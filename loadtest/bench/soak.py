"""A soak: the stream at a fixed rate for minutes while the aggregator's lag is watched.

``python -m loadtest.bench.soak --rate 20000 --duration 300`` (``make soak``) starts its own stack
like ``make bench``, optionally with more aggregator processes in the consumer group and more
ingest processes sharing the API port (``--ingest N``; each with a metrics port of its own), drives
``meter_event_stream`` (batches of 100) at the given rate, and every few seconds samples:

- the aggregator's lag in records: Kafka's end offsets minus the offsets stored with the
  rollups in PostgreSQL (what is really folded, independent of any process's own metrics);
- the ingest process's resident memory;
- the CPU time of every process (ingest, aggregators, alert evaluator, Kafka, PostgreSQL and
  the load generator), reported as cores used over the steady part of the load.

With ``--kill``, halfway through the load an ingest process and an aggregator are SIGKILLed and
started again (:mod:`loadtest.bench.soak_kills`); each kill is a row of ``SOAK.md``.

Afterwards it measures how long the backlog takes to drain, checks every (meter, customer,
window) total against the summaries (lost / doubled; series with unanswered events within
bounds), and writes ``soak.json`` and ``SOAK.md`` (``--markdown`` elsewhere for a trial).
The lag is *bounded* when the backlog at the end of the load is no larger than the largest
backlog of the first half, and the fitted trend over the second half grows by less than one
second of produced records per minute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy.children import ChildService, meterflow_child, wait_http_ready
from deploy.ports import free_port
from loadtest.bench.machine import load_average, machine_info
from loadtest.bench.processes import (
    mib,
    peak_rss_kib,
    process_table,
    reaped_children_cpu_seconds,
    status_kib,
    tree_cpu_seconds,
)
from loadtest.bench.soak_freshness import freshness_summary, parse_buckets
from loadtest.bench.soak_kills import KillTarget, kill_midway, kill_rows
from loadtest.bench.soak_report import soak_markdown
from loadtest.bench.stack import (
    READY_TIMEOUT_S,
    BenchStack,
    bench_stack,
    extra_ingest_processes,
    own_ready_url,
    start_ready,
    stop_all,
)
from loadtest.bench.suite import LOAD_METERS, MIX, REPO
from loadtest.generator import run_load
from loadtest.plan import Bounds, LoadConfig, meter_shapes, new_run_id
from loadtest.provision import create_accounts, provision
from loadtest.verify import verify_run
from meterflow.kafka.topics import METER_EVENTS_PARTITIONS, meter_events_topic


def say(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class SoakPlan:
    rate: float
    duration_s: float
    aggregators: int
    ingest: int = 1
    # SIGKILL an ingest process and an aggregator halfway through the load, and start each again
    # a second later, as a supervisor would.
    kill: bool = False
    sample_s: float = 2.0
    workers: int = 2
    connections: int = 8
    accounts: int = 2
    customers: int = 500
    drain_timeout_s: float = 300.0
    verify_timeout_s: float = 120.0


class LagProbe:
    """Unfolded records of the meter-events topic: end offsets minus stored offsets."""

    def __init__(self, stack: BenchStack) -> None:
        self._stack = stack
        self._topic = meter_events_topic(stack.settings.topic_prefix)
        self._group = stack.settings.aggregator.consumer_group
        self._partitions = [TopicPartition(self._topic, p) for p in range(METER_EVENTS_PARTITIONS)]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.bootstrap, enable_auto_commit=False
        )
        self._conn: asyncpg.Connection | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._conn = await asyncpg.connect(self._stack.database_url)

    async def stop(self) -> None:
        await self._consumer.stop()
        if self._conn is not None:
            await self._conn.close()

    async def records(self) -> tuple[int, int]:
        """(lag in records, records produced so far)."""
        assert self._conn is not None  # noqa: S101 - started first
        ends = await self._consumer.end_offsets(self._partitions)
        folded = await self._conn.fetchval(
            """SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets
               WHERE group_id = $1 AND topic = $2""",
            self._group,
            self._topic,
        )
        produced = sum(ends.values())
        return max(0, produced - int(folded)), produced


def slope_per_s(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(t, y)`` points; 0 for fewer than two."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / var


def lag_verdict(samples: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """Whether the backlog stayed bounded over the load (see the module docstring)."""
    during = [s for s in samples if s["t"] <= duration_s]
    if not during:
        return {"bounded": False, "reason": "no samples"}
    first_half = [s["lag"] for s in during if s["t"] <= duration_s / 2] or [0.0]
    second_half = [(s["t"], s["lag"]) for s in during if s["t"] > duration_s / 2]
    produced_per_s = during[-1]["produced"] / max(during[-1]["t"], 1e-9)
    trend = slope_per_s(second_half)
    end_lag = during[-1]["lag"]
    bounded = end_lag <= max(first_half) and trend * 60 < produced_per_s
    return {
        "bounded": bounded,
        "lag_at_end_records": end_lag,
        "max_lag_first_half_records": max(first_half),
        "max_lag_records": max(s["lag"] for s in during),
        "trend_second_half_records_per_min": round(trend * 60, 1),
        "produced_records_per_s": round(produced_per_s, 1),
    }


def soak_processes(
    stack: BenchStack, extra: list[ChildService], extra_ingest: Sequence[ChildService] = ()
) -> dict[str, int]:
    """The stack's processes by name; the load generator is this process and its other children."""
    named = {
        "ingest": stack.ingest.pid,
        **{child.name: child.pid for child in extra_ingest},
        "aggregator": stack.aggregator.pid,
        **{child.name: child.pid for child in extra},
        "alert evaluator": stack.alerts.pid,
        "Kafka": stack.kafka_pid,
        "PostgreSQL": stack.postgres_pid,
    }
    return {name: pid for name, pid in named.items() if pid}


def cpu_by_process(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each process tree, of the load generator's worker processes (our
    other children) and of this process (the soak's driver: pacing, sampling, progress)."""
    table = process_table()
    # Children that ended count too (a killed aggregator's database backends, for one).
    used = {
        name: tree_cpu_seconds(pid, table=table) + reaped_children_cpu_seconds(pid)
        for name, pid in processes.items()
    }
    driver = tree_cpu_seconds(os.getpid(), frozenset(table), table)  # no children: itself only
    ours = tree_cpu_seconds(os.getpid(), frozenset(processes.values()), table)
    used["load generator"] = ours - driver
    used["soak driver"] = driver
    return used


def cores_used(samples: list[dict[str, Any]], from_s: float, to_s: float) -> dict[str, float]:
    """Cores each process used between the first sample at or after ``from_s`` and the last at or
    before ``to_s`` (the generator's worker processes are gone once the load ends). A process
    restarted in between (another pid in ``pids``) counts from zero again."""
    window = [s for s in samples if from_s <= s["t"] <= to_s]
    if len(window) < 2:
        return {}
    first, last = window[0], window[-1]
    span = last["t"] - first["t"]
    used: dict[str, float] = {}
    for name in last["cpu"]:
        if name not in first["cpu"]:
            continue
        seconds = 0.0
        for before, after in pairwise(window):
            if name not in before["cpu"] or name not in after["cpu"]:
                continue
            restarted = before.get("pids", {}).get(name) != after.get("pids", {}).get(name)
            seconds += after["cpu"][name] - (0.0 if restarted else before["cpu"][name])
        used[name] = round(seconds / span, 2)
    return used


async def freshness_buckets(
    client: httpx.AsyncClient, metrics_urls: dict[str, str]
) -> dict[str, list[tuple[float, float]] | None]:
    """Each aggregator's cumulative fold-freshness buckets; None for one that did not answer
    (killed, or starting again)."""

    async def scrape(url: str) -> list[tuple[float, float]] | None:
        try:
            response = await client.get(url)
        except httpx.HTTPError:
            return None
        return parse_buckets(response.text) if response.status_code == 200 else None

    pages = await asyncio.gather(*(scrape(url) for url in metrics_urls.values()))
    return dict(zip(metrics_urls, pages, strict=True))


class Sampler:
    """Takes the soak's samples: lag, ingest memory, CPU per process, fold freshness."""

    def __init__(
        self, stack: BenchStack, extra: list[ChildService], extra_ingest: Sequence[ChildService]
    ) -> None:
        self._stack = stack
        self._extra = extra
        self._extra_ingest = extra_ingest
        self._probe = LagProbe(stack)
        self._scraper = httpx.AsyncClient(timeout=2.0)
        self._metrics_urls = {
            child.name: _aggregator_url(child, "/metrics") for child in [stack.aggregator, *extra]
        }
        self.samples: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    async def start(self) -> None:
        await self._probe.start()

    async def stop(self) -> None:
        await self._probe.stop()
        await self._scraper.aclose()

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    async def take(self) -> dict[str, Any]:
        processes = soak_processes(self._stack, self._extra, self._extra_ingest)
        freshness = await freshness_buckets(self._scraper, self._metrics_urls)
        lag, produced = await self._probe.records()
        ingest = self._stack.ingest
        rss = status_kib(ingest.pid, "VmRSS") if ingest.pid else None
        self.samples.append(
            {
                "t": round(self.elapsed_s(), 1),
                "lag": float(lag),
                "produced": float(produced),
                "ingest_rss_mib": mib(rss) or 0.0,
                "cpu": cpu_by_process(processes),
                "pids": processes,
                "freshness": freshness,
            }
        )
        return self.samples[-1]


def _aggregator_url(child: ChildService, path: str) -> str:
    """``path`` on an aggregator's own metrics port (``/metrics`` or ``/readyz``)."""
    return f"http://127.0.0.1:{child.env['METERFLOW_AGGREGATOR_METRICS_PORT']}{path}"


def kill_targets(stack: BenchStack, extra_ingest: Sequence[ChildService]) -> list[KillTarget]:
    """An ingest process (the last one, which has a readiness port of its own when there are
    several; the only one answers on the API port) and the first aggregator."""
    if extra_ingest:
        ingest = extra_ingest[-1]
        ingest_ready = own_ready_url(ingest)
    else:
        ingest, ingest_ready = stack.ingest, f"{stack.base_url}/readyz"
    aggregator_ready = _aggregator_url(stack.aggregator, "/readyz")
    return [KillTarget(ingest, ingest_ready), KillTarget(stack.aggregator, aggregator_ready)]


async def run_soak(stack: BenchStack, plan: SoakPlan) -> dict[str, Any]:
    extra = [
        meterflow_child(
            "aggregator",
            stack.child_env(METERFLOW_AGGREGATOR_METRICS_PORT=str(port)),
            stack.log_dir / f"aggregator-{n + 2}.log",
            name=f"aggregator {n + 2}",
        )
        for n, port in enumerate(free_port() for _ in range(plan.aggregators - 1))
    ]
    extra_ingest = extra_ingest_processes(stack, plan.ingest - 1)
    for child in extra:
        child.start()
    sampler = Sampler(stack, extra, extra_ingest)
    await sampler.start()
    kills: list[dict[str, Any]] = []
    try:
        for child in extra:
            url = _aggregator_url(child, "/metrics")
            await asyncio.to_thread(wait_http_ready, url, child, READY_TIMEOUT_S)
        await start_ready(extra_ingest)
        run_id = new_run_id()
        made = await create_accounts(stack.database_url, plan.accounts, run_id)
        setup = await provision(
            stack.base_url,
            [a.secret_key for a in made],
            meter_shapes(LOAD_METERS),
            plan.customers,
            run_id,
        )
        config = LoadConfig(
            bounds=Bounds(duration_s=plan.duration_s),
            mode="stream",
            rate=plan.rate,
            workers=plan.workers,
            connections=plan.connections,
            batch_size=100,
            mix=MIX,
        )
        say(f"stream at {plan.rate:,.0f} events/s for {plan.duration_s:.0f} s")
        sampler.started = time.perf_counter()
        load = asyncio.create_task(run_load(config, setup, label="soak"))
        killer = (
            asyncio.create_task(
                kill_midway(kill_targets(stack, extra_ingest), sampler.started, plan.duration_s / 2)
            )
            if plan.kill
            else None
        )
        while not load.done():
            await sampler.take()
            await asyncio.wait({load}, timeout=plan.sample_s)
        if killer is not None:
            kills = await killer
            for row in kill_rows(kills):
                say(row.strip("| ").replace(" | ", ": "))
        result = load.result()
        load_s = sampler.elapsed_s()
        say("load finished; draining the backlog")
        drain_s: float | None = None
        while sampler.elapsed_s() < load_s + plan.drain_timeout_s:
            if (await sampler.take())["lag"] == 0:
                drain_s = round(sampler.elapsed_s() - load_s, 1)
                break
            await asyncio.sleep(1.0)
        verification = None
        if result.expected is not None:
            checked = await verify_run(
                setup,
                result.expected,
                unresolved=result.unresolved,
                timeout_s=plan.verify_timeout_s,
            )
            say(checked.text())
            verification = checked.as_dict()
    finally:
        await sampler.stop()
        await asyncio.to_thread(stop_all, [*extra, *extra_ingest])
    peaks = {
        "ingest": mib(peak_rss_kib(stack.ingest.pid)) if stack.ingest.pid else None,
        "aggregator": mib(peak_rss_kib(stack.aggregator.pid)) if stack.aggregator.pid else None,
    }
    samples = sampler.samples
    return {
        "load": result.report,
        "lag": lag_verdict(samples, load_s),
        # Past the first 10 s (connections, first batches) up to the load's last full sample.
        "cores_used": cores_used(samples, 10.0, load_s - plan.sample_s),
        "kills": kills,
        "drain_s": drain_s,
        # Over the load and the drain: every accepted event's record is folded by then.
        "freshness": freshness_summary(samples),
        "samples": samples,
        "verification": verification,
        "peak_rss_mib": peaks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.soak", description=__doc__)
    parser.add_argument("--rate", type=float, default=20_000.0, help="events per second")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--aggregators", type=int, default=1, help="aggregator processes")
    parser.add_argument(
        "--ingest", type=int, default=1, help="ingest processes sharing the port (SO_REUSEPORT)"
    )
    parser.add_argument(
        "--kill",
        action="store_true",
        help="SIGKILL an ingest process and an aggregator halfway through, then restart them",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="seconds to wait for the backlog"
    )
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    parser.add_argument("--markdown", type=Path, default=REPO / "SOAK.md")
    args = parser.parse_args(argv)
    plan = SoakPlan(
        rate=args.rate,
        duration_s=args.duration,
        aggregators=args.aggregators,
        ingest=args.ingest,
        kill=args.kill,
        drain_timeout_s=args.drain_timeout,
    )
    out_dir: Path = args.out / ("soak-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(REPO) | {"loadavg_before": load_average()}
    scratch = Path(tempfile.mkdtemp(prefix="meterflow-soak-"))
    try:
        with bench_stack(scratch / "data", out_dir / "logs", say) as stack:
            soak = uvloop.run(run_soak(stack, plan))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    machine["loadavg_after"] = load_average()
    shown = out_dir.relative_to(REPO) if out_dir.is_relative_to(REPO) else out_dir
    command = f"python -m loadtest.bench.soak --rate {plan.rate:.0f} --duration "
    command += f"{plan.duration_s:.0f} --aggregators {plan.aggregators}"
    command += f" --ingest {plan.ingest}" if plan.ingest > 1 else ""
    command += " --kill" if plan.kill else ""
    results = {
        "command": command,
        "machine": machine,
        "plan": {
            "rate": plan.rate,
            "duration_s": plan.duration_s,
            "aggregators": plan.aggregators,
            "ingest": plan.ingest,
            "kill": plan.kill,
        },
        "results_dir": str(shown),
        "soak": soak,
    }
    (out_dir / "soak.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    text = soak_markdown(results)
    args.markdown.write_text(text)
    print(text)
    ok = bool(soak["lag"].get("bounded")) and bool((soak["verification"] or {}).get("ok"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
