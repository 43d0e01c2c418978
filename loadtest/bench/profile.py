"""Where the time goes: the stream at maximum rate, or the fold alone; each process's CPU,
py-spy profiles of the Python processes, and PostgreSQL's own hot functions.

``python -m loadtest.bench.profile --seconds 30`` (``make profile``) starts the bench stack, drives
``meter_event_stream`` (batches of 100) as fast as it goes, and meanwhile

- samples the CPU seconds each process used (``/proc/<pid>/stat``; PostgreSQL summed over its
  backends, the generator over its worker processes), so the split of the machine's cores shows;
- records py-spy profiles of the ingest and aggregator processes: on-CPU samples, or with
  ``--idle`` wall-clock samples, which show what a process waits on.

With ``--fold EVENTS`` it profiles the fold instead: the fold bench's raw workload of ``EVENTS``
events is produced ahead, one aggregator process folds it, and the window starts at its first
folded batch. Where ``perf`` is installed and permitted, a system-wide ``perf record`` gives
PostgreSQL's hot functions over the same window.

It prints the CPU split and, per profiled process, the functions with the most samples (own time
and including callees), and keeps the collapsed stacks (flame-graph input) in the output folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import uvloop

from deploy.children import meterflow_child
from deploy.ports import free_port
from loadtest.bench.fold_rate import FoldWorkload, build_records, folded_records, produce
from loadtest.bench.processes import tree_cpu_seconds
from loadtest.bench.stack import STOP_DEADLINE_S, BenchStack, bench_stack
from loadtest.bench.suite import LOAD_METERS, MIX, REPO
from loadtest.generator import run_load
from loadtest.plan import Bounds, LoadConfig, meter_shapes, new_run_id
from loadtest.provision import create_accounts, provision
from meterflow.kafka.topics import ensure_topics, meter_events_topic, topic_specs


def say(message: str) -> None:
    print(f"profile: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class FunctionTime:
    name: str
    own: int
    total: int


def hot_functions(collapsed: str, top: int = 15) -> tuple[int, list[FunctionTime]]:
    """Samples and the ``top`` functions by own samples from py-spy's collapsed stacks.

    Each line is ``frame;frame;...;leaf count``; a function counts once per stack for the total.
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    ranked = [FunctionTime(name, n, total[name]) for name, n in own.most_common(top)]
    return samples, ranked


def _short(frame: str) -> str:
    """``fold_batch (aggregator/fold.py:42)`` -> ``fold_batch (aggregator/fold.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", str(REPO) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


def _py_spy(pid: int, seconds: float, out: Path, *, idle: bool) -> subprocess.Popen[bytes]:
    binary = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [
            str(binary if binary.exists() else "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "97",
            "--nonblocking",
            *(["--idle"] if idle else []),
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def profile_stream(stack: BenchStack, seconds: float, out_dir: Path, *, idle: bool) -> str:
    run_id = new_run_id()
    made = await create_accounts(stack.database_url, 2, run_id)
    setup = await provision(
        stack.base_url, [a.secret_key for a in made], meter_shapes(LOAD_METERS), 500, run_id
    )
    config = LoadConfig(
        bounds=Bounds(duration_s=seconds + 4.0),
        mode="stream",
        workers=2,
        connections=8,
        batch_size=100,
        mix=MIX,
        track_totals=False,
    )
    processes = {
        "ingest": stack.ingest.pid,
        "aggregator": stack.aggregator.pid,
        "Kafka": stack.kafka_pid,
        "PostgreSQL": stack.postgres_pid,
    }
    load = asyncio.create_task(run_load(config, setup, label="profile", out=None))
    await asyncio.sleep(2.0)  # past connection set-up and the first batches
    # The stack's services are children of this process too; the generator is the rest.
    services = frozenset(pid for pid in processes.values() if pid)
    before = {name: tree_cpu_seconds(pid) for name, pid in processes.items() if pid}
    before["load generator"] = tree_cpu_seconds(os.getpid(), services)
    spies = {
        name: _py_spy(pid, seconds, out_dir / f"{name}.collapsed", idle=idle)
        for name, pid in processes.items()
        if name in ("ingest", "aggregator") and pid
    }
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    after = {name: tree_cpu_seconds(pid) for name, pid in processes.items() if pid}
    after["load generator"] = tree_cpu_seconds(os.getpid(), services)
    for spy in spies.values():
        await asyncio.to_thread(spy.wait, 60)
    result = await load
    lines = [
        f"stream at max rate: {result.report['accepted_events_per_s']:,.0f} accepted events/s "
        f"over the whole run; CPU over {elapsed:.0f} s of it (cores used, of {os.cpu_count()}):"
    ]
    lines.extend(
        f"  {name:16s} {(used - before[name]) / elapsed:5.2f}" for name, used in after.items()
    )
    lines.extend(_spy_lines({n: out_dir / f"{n}.collapsed" for n in spies}, idle=idle))
    return "\n".join(lines)


_FOLD_METERS = (("mtr_profile_a", "profile_a"), ("mtr_profile_b", "profile_b"))
_FOLD_POLL_S = 0.05


def _perf_record(seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """System-wide ``perf record`` for ``seconds``; None where perf is not installed."""
    binary = shutil.which("perf")
    if binary is None:
        return None
    return subprocess.Popen(
        [binary, "record", "-F", "499", "-a", "-o", str(out), "--", "sleep", str(int(seconds))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def postgres_hot_functions(report: str, top: int = 15) -> list[tuple[float, str]]:
    """``(percent, symbol)`` of the ``top`` lines of ``perf report --sort sym --stdio``, the
    percentages of all samples (every process's)."""
    hot: list[tuple[float, str]] = []
    for line in report.splitlines():
        percent, _, rest = line.strip().partition("%")
        if not rest or line.lstrip().startswith("#"):
            continue
        try:
            value = float(percent)
        except ValueError:
            continue
        hot.append((value, rest.strip().removeprefix("[.]").removeprefix("[k]").strip()))
        if len(hot) == top:
            break
    return hot


def _perf_lines(data: Path, out_dir: Path) -> list[str]:
    if not data.exists() or data.stat().st_size == 0:
        return ["PostgreSQL: no perf profile (perf missing or not permitted)"]
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--comm", "postgres", "--no-children",
         "--sort", "sym", "--stdio"],
        capture_output=True, text=True, timeout=300, check=False,
    ).stdout  # fmt: skip
    (out_dir / "postgres.perf.txt").write_text(report)
    hot = postgres_hot_functions(report)
    lines = ["PostgreSQL: hottest functions (perf, % of all samples on the machine)"]
    lines.extend(f"  {percent:5.1f}  {name}" for percent, name in hot)
    return lines


async def profile_fold(stack: BenchStack, seconds: float, events: int, out_dir: Path) -> str:
    """One aggregator folding ``events`` produced raw events; the profiles start at its first
    folded batch and last ``seconds`` (or until the records run out)."""
    prefix = f"profile-fold-{new_run_id()}"
    await ensure_topics(stack.bootstrap, topic_specs(prefix))
    topic = meter_events_topic(prefix)
    workload = FoldWorkload("raw", f"acct_{prefix}", _FOLD_METERS, 2000, events, False)
    produced = build_records(workload, int(time.time()))
    await produce(stack.bootstrap, topic, produced.records)
    group = f"{prefix}-group"
    child = meterflow_child(
        "aggregator",
        stack.child_env(
            METERFLOW_TOPIC_PREFIX=prefix,
            METERFLOW_CONSUMER_GROUP=group,
            METERFLOW_AGGREGATOR_METRICS_PORT=str(free_port()),
        ),
        stack.log_dir / "aggregator-profile-fold.log",
    )
    conn = await asyncpg.connect(stack.database_url)
    child.start()
    try:
        while await folded_records(conn, group, topic) == 0:
            if not child.alive():
                raise RuntimeError("the aggregator exited before folding")
            await asyncio.sleep(_FOLD_POLL_S)
        assert child.pid is not None  # noqa: S101 - started above
        processes = {
            "aggregator": child.pid,
            "Kafka": stack.kafka_pid,
            "PostgreSQL": stack.postgres_pid,
        }
        before = {name: tree_cpu_seconds(pid) for name, pid in processes.items() if pid}
        folded_before = await folded_records(conn, group, topic)
        spy = _py_spy(child.pid, seconds, out_dir / "aggregator.collapsed", idle=False)
        perf = _perf_record(seconds, out_dir / "perf.data")
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            if await folded_records(conn, group, topic) >= len(produced.records):
                break
            await asyncio.sleep(_FOLD_POLL_S)
        elapsed = time.perf_counter() - started
        after = {name: tree_cpu_seconds(pid) for name, pid in processes.items() if pid}
        folded = await folded_records(conn, group, topic) - folded_before
        for running in (spy, perf):
            if running is not None:
                await asyncio.to_thread(running.wait, 120)
    finally:
        await conn.close()
        await asyncio.to_thread(child.stop, STOP_DEADLINE_S)
    per_record = produced.events / len(produced.records)
    lines = [
        f"fold alone (raw workload, one aggregator): {folded * per_record / elapsed:,.0f} "
        f"events/s over {elapsed:.1f} s; CPU (cores used, of {os.cpu_count()}):"
    ]
    lines.extend(
        f"  {name:16s} {(used - before[name]) / elapsed:5.2f}" for name, used in after.items()
    )
    lines.extend(_spy_lines({"aggregator": out_dir / "aggregator.collapsed"}, idle=False))
    lines.extend(_perf_lines(out_dir / "perf.data", out_dir))
    return "\n".join(lines)


def _spy_lines(paths: dict[str, Path], *, idle: bool) -> list[str]:
    lines: list[str] = []
    for name, path in paths.items():
        if not path.exists():
            lines.append(f"{name}: no profile (py-spy missing or not permitted)")
            continue
        samples, ranked = hot_functions(path.read_text())
        kind = "wall-clock (idle included)" if idle else "on-CPU"
        lines.append(f"{name}: {samples} {kind} samples; top functions by own samples")
        lines.append("   own%  total%  function")
        lines.extend(
            f"  {100 * f.own / samples:5.1f}  {100 * f.total / samples:6.1f}  {f.name}"
            for f in ranked
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--idle", action="store_true", help="wall-clock profiles: count waiting as well as CPU"
    )
    parser.add_argument(
        "--fold", type=int, metavar="EVENTS", help="profile one aggregator folding EVENTS events"
    )
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench")
    args = parser.parse_args(argv)
    out_dir: Path = args.out / ("profile-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="meterflow-profile-"))
    try:
        with bench_stack(scratch / "data", out_dir / "logs", say) as stack:
            if args.fold:
                text = uvloop.run(profile_fold(stack, args.seconds, args.fold, out_dir))
            else:
                text = uvloop.run(profile_stream(stack, args.seconds, out_dir, idle=args.idle))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (out_dir / "profile.txt").write_text(text + "\n")
    print(text)
    say(f"collapsed stacks and profile.txt in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
