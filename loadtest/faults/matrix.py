"""``python -m loadtest.faults`` (``make faults``): every fault on a stack of its own.

For each fault a fresh stack starts on free loopback ports (:mod:`loadtest.faults.stack`), a
steady v2 load runs, the fault is injected after a few seconds and lifted, and once the load
ends every acknowledged event is checked against the summaries (:mod:`loadtest.faults.run`).
Writes ``build/faults/<timestamp>/faults.json`` and ``FAULTS.md``; exits 1 if any fault lost,
doubled or left unresolved an event.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import uvloop

from loadtest.bench.machine import load_average, machine_info
from loadtest.faults.disk import MountRefused
from loadtest.faults.full_disk import DISK_MB, fill_postgres_disk
from loadtest.faults.run import Fault, FaultPlan, FaultResult, run_fault
from loadtest.faults.stack import FaultStack, fault_stack

REPO = Path(__file__).resolve().parents[2]
OUTAGE_S = 10.0


def say(message: str) -> None:
    print(f"faults: {message}", file=sys.stderr, flush=True)


def _kill(name: str, stack: FaultStack) -> None:
    stack.kill_and_restart(name)


def _pause_kafka(seconds: float, stack: FaultStack) -> None:
    stack.pause_kafka(seconds)


def _stop_postgres(seconds: float, stack: FaultStack) -> None:
    stack.stop_postgres(seconds)


def faults(outage_s: float = OUTAGE_S) -> list[Fault]:
    return [
        Fault("SIGKILL ingest", partial(_kill, "ingest")),
        Fault("SIGKILL aggregator", partial(_kill, "aggregator")),
        Fault("SIGKILL alert evaluator", partial(_kill, "alerts")),
        Fault(f"Kafka paused (SIGSTOP) {outage_s:.0f} s", partial(_pause_kafka, outage_s)),
        Fault("Kafka broker restart", FaultStack.restart_kafka),
        Fault("PostgreSQL restart (pg_ctl restart -m fast)", FaultStack.restart_postgres),
        Fault(f"PostgreSQL stopped {outage_s:.0f} s", partial(_stop_postgres, outage_s)),
        Fault(
            f"PostgreSQL data directory full {outage_s:.0f} s (the WAL segment has room)",
            partial(fill_postgres_disk, outage_s, wal_full=False),
            postgres_disk_mb=DISK_MB,
        ),
        Fault(
            f"PostgreSQL data directory full {outage_s:.0f} s (the WAL needs a new segment)",
            partial(fill_postgres_disk, outage_s, wal_full=True),
            postgres_disk_mb=DISK_MB,
        ),
    ]


FULL_DISK_NOTE = (
    f"For the full-disk faults PostgreSQL's data directory (the whole cluster: `base`, "
    f"`pg_wal`, everything) is a {DISK_MB} MiB tmpfs. The fault fills what is left of it with "
    "a ballast file, holds it full, deletes the ballast and, if PostgreSQL is then found "
    "stopped, starts it with `pg_ctl start` (the stack has no supervisor for it); the fault "
    "lasts until PostgreSQL accepts connections again. WAL segments are 16 MiB files written "
    "in place, so a full disk first fails only writes to tables and indexes, and the next "
    "commit once the current segment is used up: the first fault starts a fresh segment "
    "before filling the disk (`pg_switch_wal()`), the second ends the current one on the full "
    "disk. The notes give what PostgreSQL logged and what the aggregator and ingest counted."
)


def _refused_text(result: FaultResult) -> tuple[str, str]:
    total = sum(result.refused.values())
    how = ", ".join(f"{kind}: {n}" for kind, n in result.refused.items()) or "none"
    return f"{total} of {result.requests}", how


def faults_markdown(results: dict[str, Any], rows: list[FaultResult]) -> str:
    machine, plan = results["machine"], results["plan"]
    lines = [
        "# Fault matrix",
        "",
        f"Written by `{results['command']}` on {machine['date']} (git {machine['git_rev']}; "
        f"{machine['nproc']} cores, {machine['cpu_model']}; 1-min loadavg before / after "
        f"{machine['loadavg_before'][0]} / {machine['loadavg_after'][0]}). Raw results: "
        f"`{results['results_dir']}/faults.json`.",
        "",
        f"Each fault ran on a stack of its own (PostgreSQL, Kafka, ingest, aggregator, alert "
        f"evaluator on free loopback ports) under a steady load of {plan['rate']:.0f} v2 meter "
        f"events/s (one per request, each with an identifier, {plan['connections']} "
        f"connections) for {plan['load_s']:.0f} s, the fault injected after "
        f"{plan['before_s']:.0f} s. A refused request (503, another 5xx, 429, or no answer: "
        "a connection error or a 5 s timeout) is resent with backoff, honouring `Retry-After`. "
        "The stack has no supervisor: "
        "after a SIGKILL the runner starts the child again 0.5 s later, as `meterflow up` "
        "would. *Recovery* is from the moment the fault was lifted (the kill, the resume, the "
        "restart's end) until every process's `/readyz` answers 200 and the load's last "
        "refusal (to the second). *Lost* and *doubled* compare every event acknowledged with a "
        "200 against the summaries afterwards.",
        "",
        "| Fault | Requests refused | How they were refused | Fault lasted | Recovery | "
        "Lost | Doubled | Unresolved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.skipped is not None:
            reason = " ".join(row.skipped.split()).replace("|", "\\|")
            lines.append(f"| {row.fault} | skipped: {reason} | - | - | - | - | - | - |")
            continue
        refused, how = _refused_text(row)
        recovery = "NOT recovered" if row.recovery_s is None else f"{row.recovery_s} s"
        lines.append(
            f"| {row.fault} | {refused} | {how} | {row.fault_window_s} s | {recovery} | "
            f"{row.lost} | {row.doubled} | {row.unresolved} |"
        )
    notes = [f"- {row.fault}: {note}" for row in rows for note in row.notes]
    lines += ["", FULL_DISK_NOTE, ""]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    return "\n".join(lines)


def run_matrix(chosen: list[Fault], plan: FaultPlan, out_dir: Path) -> list[FaultResult]:
    rows: list[FaultResult] = []
    for n, fault in enumerate(chosen):
        say(f"{fault.name}: starting a stack")
        scratch = Path(tempfile.mkdtemp(prefix="meterflow-faults-"))
        scratch.chmod(0o755)  # the server account (meterflow-pg under root) must traverse it
        logs = out_dir / "logs" / f"{n}"
        try:
            with fault_stack(
                scratch / "data", logs, say, postgres_disk_mb=fault.postgres_disk_mb
            ) as stack:
                row = uvloop.run(run_fault(stack, fault, plan))
        except MountRefused as exc:
            row = FaultResult.skipped_because(fault.name, str(exc))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        say(f"{fault.name}: {row.as_dict()}")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.faults", description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--load-s", type=float, default=30.0, help="seconds of load per fault")
    parser.add_argument("--only", action="append", help="run faults whose name contains this")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "faults")
    parser.add_argument("--markdown", type=Path, default=REPO / "FAULTS.md")
    args = parser.parse_args(argv)
    plan = FaultPlan(rate=args.rate, load_s=args.load_s)
    chosen = [
        f for f in faults() if not args.only or any(o.lower() in f.name.lower() for o in args.only)
    ]
    out_dir: Path = args.out / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(REPO) | {"loadavg_before": load_average()}
    rows = run_matrix(chosen, plan, out_dir)
    machine["loadavg_after"] = load_average()
    shown = out_dir.relative_to(REPO) if out_dir.is_relative_to(REPO) else out_dir
    results = {
        "command": "python -m loadtest.faults" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
        "machine": machine,
        "plan": {
            "rate": plan.rate,
            "load_s": plan.load_s,
            "before_s": plan.before_s,
            "connections": plan.connections,
        },
        "results_dir": str(shown),
        "faults": [row.as_dict() for row in rows],
    }
    (out_dir / "faults.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    text = faults_markdown(results, rows)
    if not args.only:
        args.markdown.write_text(text)
    print(text)
    return 0 if all(row.ok for row in rows) else 1
