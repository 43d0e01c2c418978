"""Peak memory of processes, from ``/proc/<pid>/status`` (``VmHWM``: the resident-set high mark)."""

from __future__ import annotations

import contextlib
from pathlib import Path

_PROC = Path("/proc")


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
