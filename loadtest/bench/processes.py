"""Memory and CPU of processes, from ``/proc``: ``VmHWM`` (the resident-set high mark), ``VmRSS``
and the user + system CPU time."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int | None:
    """A KiB field (``VmHWM``, ``VmRSS``) of ``/proc/<pid>/status``; None if gone or unreadable."""
    try:
        text = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def peak_rss_kib(pid: int) -> int | None:
    """``VmHWM`` of one process in KiB: its resident-set high mark."""
    return status_kib(pid, "VmHWM")


def child_pids(parent: int) -> list[int]:
    children = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                children.append(int(entry.name))
    return children


def peak_rss_tree_kib(pid: int) -> tuple[int | None, int]:
    """The summed ``VmHWM`` of a process and its children, and how many processes that is.

    Shared memory (PostgreSQL's shared buffers) counts once per process that touched it, so for
    PostgreSQL this overstates the real footprint.
    """
    peaks = [peak_rss_kib(p) for p in [pid, *child_pids(pid)]]
    known = [p for p in peaks if p is not None]
    return (sum(known) if known else None), len(known)


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


ProcessTable = dict[int, tuple[int, float]]  # pid -> (parent pid, user + system CPU seconds)


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces and
    parentheses), or None if the process is gone."""
    try:
        return (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICKS


def reaped_children_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the children ``pid`` has waited for, once they ended (0 if it
    is gone): PostgreSQL's backends, say, whose CPU a sum over the live tree loses as they exit."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[13]) + int(fields[14])) / _TICKS


def process_table() -> ProcessTable:
    """Every process's parent and CPU seconds, from one pass over ``/proc``."""
    table: ProcessTable = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS)
    return table


def tree_cpu_seconds(
    pid: int, excluded: frozenset[int] = frozenset(), table: ProcessTable | None = None
) -> float:
    """A process and its descendants, except the ``excluded`` children (and their own)."""
    table = process_table() if table is None else table
    children = [c for c, (parent, _) in table.items() if parent == pid and c not in excluded]
    own = table.get(pid, (0, 0.0))[1]
    return own + sum(tree_cpu_seconds(child, table=table) for child in children)
