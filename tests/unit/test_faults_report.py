"""The fault matrix's report: a fault that cannot run here is a skipped row that fails nothing,
and what PostgreSQL logged on a full disk is summarised in a few notes."""

from __future__ import annotations

from typing import Any

from loadtest.faults.full_disk import postgres_log_notes
from loadtest.faults.matrix import faults_markdown
from loadtest.faults.run import FaultResult

FULL = "PostgreSQL data directory full 10 s (the WAL needs a new segment)"


def _results() -> dict[str, Any]:
    machine = {
        "date": "2026-12-04 16:02 UTC",
        "git_rev": "c3d6299",
        "nproc": 2,
        "cpu_model": "a CPU",
        "loadavg_before": [0.1],
        "loadavg_after": [0.2],
    }
    plan = {"rate": 200.0, "load_s": 30.0, "before_s": 5.0, "connections": 8}
    return {
        "command": "python -m loadtest.faults",
        "machine": machine,
        "plan": plan,
        "results_dir": "build/faults/x",
    }


def test_a_refused_mount_is_a_skipped_row_that_fails_nothing() -> None:
    row = FaultResult.skipped_because(FULL, "not root: mounting a size-limited tmpfs needs X")
    assert row.ok
    assert row.as_dict()["skipped"] == "not root: mounting a size-limited tmpfs needs X"
    text = faults_markdown(_results(), [row])
    assert f"| {FULL} | skipped: not root: mounting a size-limited tmpfs needs X |" in text


def test_a_row_that_lost_an_event_is_not_ok() -> None:
    row = FaultResult(
        fault=FULL,
        requests=10,
        refused={"503": 2},
        fault_window_s=10.3,
        recovery_s=0.5,
        accepted=8,
        unresolved=0,
        lost=1,
        doubled=0,
        verified=False,
        notes=["PostgreSQL logged 1 'No space left on device' (PANIC 1)"],
    )
    assert not row.ok
    text = faults_markdown(_results(), [row])
    assert f"| {FULL} | 2 of 10 | 503: 2 | 10.3 s | 0.5 s | 1 | 0 | 0 |" in text
    assert f"- {FULL}: PostgreSQL logged 1 'No space left on device' (PANIC 1)" in text


def test_the_server_log_is_summarised() -> None:
    lines = [
        "2026-12-04 16:02:01.1 UTC [12] meterflow@meterflow ERROR:  could not extend file "
        '"base/16384/16415": No space left on device',
        "2026-12-04 16:02:01.1 UTC [12] meterflow@meterflow HINT:  Check free disk space.",
        "2026-12-04 16:02:02.1 UTC [13] meterflow@meterflow PANIC:  could not write to file "
        '"pg_wal/xlogtemp.13": No space left on device',
        "2026-12-04 16:02:02.2 UTC [1] LOG:  all server processes terminated; reinitializing",
        '2026-12-04 16:02:02.3 UTC [14] FATAL:  could not write to file "pg_wal/xlogtemp.14": '
        "No space left on device",
        "2026-12-04 16:02:02.3 UTC [1] LOG:  shutting down due to startup process failure",
    ]
    assert postgres_log_notes(lines) == [
        "PostgreSQL logged 3 'No space left on device' (ERROR 1, FATAL 1, PANIC 1)",
        'first: ERROR:  could not extend file "base/16384/16415": No space left on device',
        'first PANIC: PANIC:  could not write to file "pg_wal/xlogtemp.13": No space left on '
        "device",
        "the postmaster reinitialised after a crash 1 time(s)",
        "its crash recovery failed on the full disk, and the postmaster exited",
    ]


def test_a_log_without_a_full_disk_says_so() -> None:
    assert postgres_log_notes(["2026-12-04 16:02:01.1 UTC [1] LOG:  checkpoint starting"]) == [
        "PostgreSQL logged no 'No space left on device'"
    ]
