"""Live progress: per-second snapshots from all workers, merged, printed, kept as a timeline."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from loadtest.outcomes import Snapshot, Tally

_LATE_S = 1.5  # print a second once every worker reported it, or this long after it ended


@dataclass(slots=True)
class _Second:
    tally: Tally = field(default_factory=Tally)
    workers: set[int] = field(default_factory=set)


def timeline_point(second: int, tally: Tally) -> dict[str, Any]:
    return {
        "t": second,
        "requests": tally.requests,
        "events": tally.events,
        "statuses": dict(sorted(tally.statuses.items())),
        "p50_ms": round(tally.latency.percentile_us(50) / 1000, 3),
        "p99_ms": round(tally.latency.percentile_us(99) / 1000, 3),
    }


def progress_line(label: str, point: dict[str, Any]) -> str:
    statuses = " ".join(f"{s}:{n}" for s, n in point["statuses"].items()) or "-"
    return (
        f"[{label} {point['t'] + 1:>4}s] {point['requests']:>7} req/s {point['events']:>7} ev/s"
        f"  status {statuses}  p50 {point['p50_ms']:.1f} ms  p99 {point['p99_ms']:.1f} ms"
    )


class ProgressBoard:
    def __init__(self, workers: int, label: str, out: TextIO | None = sys.stderr) -> None:
        self._workers = workers
        self._label = label
        self._out = out
        self._seconds: dict[int, _Second] = {}
        self._printed = -1
        self.start_at: float | None = None

    def add(self, snapshot: Snapshot) -> None:
        second = self._seconds.setdefault(snapshot.second, _Second())
        second.tally.merge(snapshot.tally)
        second.workers.add(snapshot.worker)

    def print_due(self, final: bool = False) -> None:
        """Print each second once all workers reported it (or it is overdue)."""
        now = time.time()
        for second in sorted(s for s in self._seconds if s > self._printed):
            entry = self._seconds[second]
            overdue = self.start_at is not None and now > self.start_at + second + 1 + _LATE_S
            if not (final or overdue or len(entry.workers) >= self._workers):
                break
            if self._out is not None:
                print(
                    progress_line(self._label, timeline_point(second, entry.tally)),
                    file=self._out,
                    flush=True,
                )
            self._printed = second

    def timeline(self) -> list[dict[str, Any]]:
        return [timeline_point(s, self._seconds[s].tally) for s in sorted(self._seconds)]
