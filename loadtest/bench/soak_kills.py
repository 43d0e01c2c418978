"""The soak's kills: mid-run, SIGKILL an ingest process and an aggregator at the same moment, and
start each again a second later, as ``meterflow up``'s supervisor would, while the load goes on.

Requests in flight to the killed ingest process fail at the generator without an answer; it
resends them with the same identifiers (to another process on the shared port, or to the restarted
one), so an event that had landed is dropped by the aggregator's dedupe and counted once. An
event still without an answer after every retry is *unresolved*, and the verification checks its
series within bounds (:mod:`loadtest.verify`). The killed aggregator's partitions go to the
others, which resume from the offsets stored with the rollups.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from deploy.children import ChildService, wait_http_ready
from loadtest.bench.stack import READY_TIMEOUT_S
from meterflow.errors import LauncherError

RESTART_DELAY_S = 1.0


@dataclass(frozen=True, slots=True)
class KillTarget:
    """A child to kill, and the URL that answers 200 once it serves again (its own port)."""

    child: ChildService
    ready_url: str


def _seconds_since(started: float) -> float:
    return round(time.perf_counter() - started, 1)


async def kill_and_restart(
    target: KillTarget, started: float, restart_delay_s: float = RESTART_DELAY_S
) -> dict[str, Any]:
    """SIGKILL the child, wait for it to die, start it again after ``restart_delay_s`` and wait
    until it is ready; what happened when, in seconds since ``started``."""
    child, process = target.child, target.child.process
    if process is None or process.poll() is not None:
        return {"process": child.name, "pid": None, "killed_at_s": None}
    pid = process.pid
    os.kill(pid, signal.SIGKILL)
    killed_at = _seconds_since(started)
    await asyncio.to_thread(process.wait)
    await asyncio.sleep(restart_delay_s)
    child.start()
    restarted_at = _seconds_since(started)
    ready_at: float | None = None
    try:
        await asyncio.to_thread(wait_http_ready, target.ready_url, child, READY_TIMEOUT_S)
        ready_at = _seconds_since(started)
    except LauncherError:
        pass  # the row says it never came back; the verification says what that cost
    return {
        "process": child.name,
        "pid": pid,
        "new_pid": child.pid,
        "killed_at_s": killed_at,
        "restarted_at_s": restarted_at,
        "ready_at_s": ready_at,
    }


async def kill_midway(
    targets: list[KillTarget], started: float, at_s: float
) -> list[dict[str, Any]]:
    """At ``at_s`` seconds after ``started``, kill and restart every target at once."""
    await asyncio.sleep(max(0.0, started + at_s - time.perf_counter()))
    return list(await asyncio.gather(*(kill_and_restart(t, started) for t in targets)))


def kill_rows(kills: list[dict[str, Any]]) -> list[str]:
    """One SOAK.md table row per kill."""
    if not kills:
        return ["| Kills | none |"]
    rows = []
    for kill in kills:
        if kill["pid"] is None:
            rows.append(f"| Kill: {kill['process']} | not running when its turn came |")
            continue
        ready = kill["ready_at_s"]
        rows.append(
            f"| Kill: {kill['process']} | SIGKILLed (pid {kill['pid']}) at "
            f"{kill['killed_at_s']} s, started again at {kill['restarted_at_s']} s "
            f"(pid {kill['new_pid']}), "
            + ("NOT ready again" if ready is None else f"ready at {ready} s")
            + " |"
        )
    return rows
