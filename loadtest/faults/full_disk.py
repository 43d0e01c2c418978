"""The full-disk fault: PostgreSQL's data directory fills up under load, then space is freed.

The stack's cluster lives on a small tmpfs (:mod:`loadtest.faults.disk`). The fault fills it
with a ballast file, holds it full, deletes the ballast, and then makes sure PostgreSQL serves
again: a server that ran out of space for its WAL PANICs, and one that then fails its crash
recovery exits, so a server found stopped is started again with ``pg_ctl start``, as an operator
(or a supervisor) would. What the server logged while its disk was full, and how many batches
the aggregator failed and retried, come back as notes for the report.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from loadtest.faults.stack import READY_TIMEOUT_S, FaultStack
from meterflow.errors import LauncherError

DISK_MB = 256
_POLL_S = 0.2
_ENOSPC = "No space left on device"
# How much longer than asked the disk stays full when PostgreSQL has not yet failed a write on
# it: at a light load, a few seconds can pass without a write that needs a new block.
_ENOSPC_WAIT_S = 15.0
_SEVERITY = re.compile(r"\b(ERROR|FATAL|PANIC|LOG|WARNING):  ")


def _log_sizes(paths: list[Path]) -> dict[Path, int]:
    return {path: path.stat().st_size if path.exists() else 0 for path in paths}


def _logged_since(sizes: dict[Path, int]) -> list[str]:
    lines: list[str] = []
    for path, offset in sizes.items():
        if path.exists():
            with path.open("rb") as log:
                log.seek(offset)
                lines += log.read().decode(errors="replace").splitlines()
    return lines


def _message(line: str) -> str:
    """A log line without its timestamp, pid and user prefix."""
    found = _SEVERITY.search(line)
    return line[found.start() :] if found else line


def postgres_log_notes(lines: list[str]) -> list[str]:
    """What the server said while its disk was full and until it served again, in brief."""
    full = [line for line in lines if _ENOSPC in line]
    by_severity = Counter(
        found.group(1) for line in full if (found := _SEVERITY.search(line)) is not None
    )
    notes: list[str] = []
    if full:
        counts = ", ".join(f"{severity} {n}" for severity, n in sorted(by_severity.items()))
        notes.append(f"PostgreSQL logged {len(full)} '{_ENOSPC}' ({counts})")
        notes.append(f"first: {_message(full[0])}")
    else:
        notes.append(f"PostgreSQL logged no '{_ENOSPC}'")
    panics = [line for line in lines if "PANIC:  " in line]
    if panics and (not full or panics[0] != full[0]):
        notes.append(f"first PANIC: {_message(panics[0])}")
    reinitialised = sum("all server processes terminated; reinitializing" in ln for ln in lines)
    if reinitialised:
        notes.append(f"the postmaster reinitialised after a crash {reinitialised} time(s)")
    # "aborting startup due to ..." before PostgreSQL 15, "shutting down due to ..." since.
    if any("due to startup process failure" in line for line in lines):
        notes.append("its crash recovery failed on the full disk, and the postmaster exited")
    return notes


def _counter_total(url: str, name: str) -> float | None:
    """The sum of a counter's samples on a /metrics page, or None when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 - our own URL
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def _metrics_url(stack: FaultStack, child: str) -> str:
    return stack.ready_urls[child].removesuffix("/readyz") + "/metrics"


def _retry_counts(stack: FaultStack) -> dict[str, float | None]:
    aggregator = _metrics_url(stack, "aggregator")
    return {
        "fold_failures": _counter_total(aggregator, "meterflow_fold_failures_total"),
        "aggregator_outages": _counter_total(aggregator, "meterflow_database_outage_errors_total"),
        "ingest_outages": _counter_total(
            _metrics_url(stack, "ingest"), "meterflow_database_outage_errors_total"
        ),
    }


def _retry_notes(before: dict[str, float | None], after: dict[str, float | None]) -> str:
    def delta(key: str) -> str:
        first, last = before[key], after[key]
        if first is None or last is None or last < first:  # not answering, or restarted
            return "unknown"
        return f"{last - first:.0f}"

    return (
        f"aggregator: {delta('fold_failures')} fold batches failed and were read again, "
        f"{delta('aggregator_outages')} failed passes counted as a database outage; "
        f"ingest: {delta('ingest_outages')} requests answered 503 for the database"
    )


def bring_postgres_back(stack: FaultStack, notes: list[str]) -> None:
    """Wait until PostgreSQL accepts connections; start it if it is found stopped."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stack.postgres_accepting():
        if not stack.postgres_running():
            notes.append("PostgreSQL was not running once space was freed; the runner started it")
            stack.start_postgres()
            continue
        if time.monotonic() >= deadline:
            raise LauncherError(f"PostgreSQL did not accept connections in {READY_TIMEOUT_S}s")
        time.sleep(_POLL_S)


async def _switch_wal(admin_dsn: str, *, start_next: bool) -> str:
    """End the current WAL segment; with ``start_next``, commit once more, so that the next
    segment's file is created now. The name of the segment ended."""
    connection = await asyncpg.connect(admin_dsn)
    try:
        ended = str(await connection.fetchval("SELECT pg_walfile_name(pg_switch_wal())"))
        if start_next:
            await connection.fetchval("SELECT txid_current()")  # a commit, flushed
        return ended
    finally:
        await connection.close()


def fill_postgres_disk(seconds: float, stack: FaultStack, *, wal_full: bool) -> list[str]:
    """Fill the cluster's filesystem, hold it full for ``seconds`` and then until PostgreSQL has
    failed a write on it (up to ``_ENOSPC_WAIT_S`` more), free it, and bring PostgreSQL back if
    it stopped; notes on what happened.

    Which writes fail depends on the WAL: its segments are 16 MiB files created whole, and
    written into in place. So a full disk fails only the writes to tables and indexes until
    the current segment is used up, and then the next commit, which needs a new segment. The
    fault takes one of the two cases at will, with ``pg_switch_wal()``: without ``wal_full``
    the server starts a fresh segment before the disk fills (room for the whole fault); with
    it, the current segment is ended once the disk is full.
    """
    disk = stack.small_disk
    if disk is None:
        raise LauncherError("the full-disk fault needs a stack on a small disk")
    logs = _log_sizes(stack.postgres_logs)
    counts = _retry_counts(stack)
    notes: list[str] = []
    admin_dsn = stack.postgres.admin_dsn
    if not wal_full:
        ended = asyncio.run(_switch_wal(admin_dsn, start_next=True))
        notes.append(f"WAL segment {ended} ended before the disk filled: the next one has room")
    try:
        ballast = disk.fill()
        notes.append(
            f"a {disk.size_mb} MiB tmpfs holds the cluster; the ballast took its last "
            f"{ballast / (1 << 20):.0f} MiB"
        )
        if wal_full:
            ended = asyncio.run(_switch_wal(admin_dsn, start_next=False))
            notes.append(f"WAL segment {ended} ended on the full disk")
        time.sleep(seconds)
        deadline = time.monotonic() + _ENOSPC_WAIT_S
        while time.monotonic() < deadline and not any(
            _ENOSPC in line for line in _logged_since(logs)
        ):
            time.sleep(_POLL_S)
    finally:
        disk.empty()
    notes += postgres_log_notes(_logged_since(logs))
    bring_postgres_back(stack, notes)
    notes.append(_retry_notes(counts, _retry_counts(stack)))
    return notes
