"""Process plumbing for the launchers: children that die with their launcher, and what /proc says.

A child started with :func:`die_with_parent` gets a signal from the kernel when the thread that
started it ends (``PR_SET_PDEATHSIG``), so a SIGKILLed ``meterflow up`` leaves nothing running.
The kernel ties the signal to the starting *thread*, not the process: a child started from a
worker thread would be signalled when that thread ends, so only the main thread asks for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when this process dies.

    None where that is not possible (not Linux, or not the main thread): the child then outlives
    a killed launcher, as any child does.
    """
    on_main_thread = threading.current_thread() is threading.main_thread()
    if not sys.platform.startswith("linux") or not on_main_thread:
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only calls it
    parent = os.getpid()

    def between_fork_and_exec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os._exit(1)

    return between_fork_and_exec


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None if gone."""
    try:
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, ValueError):
        return None


def is_running(pid: int) -> bool:
    """Whether ``pid`` names a process that has not exited (a zombie has)."""
    fields = _stat_fields(pid)
    if fields is not None:
        return fields[0] not in ("Z", "X")
    if Path("/proc/self").exists():
        return False
    try:  # no /proc: signal 0 tells whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def command_line(pid: int) -> list[str]:
    """The argv of ``pid``, empty if it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def all_pids() -> list[int]:
    """Every pid in /proc (empty where there is no /proc)."""
    return [int(entry.name) for entry in Path("/proc").glob("[0-9]*")]


def child_pids(parent: int) -> list[int]:
    """Direct children of ``parent``, from /proc (empty where there is no /proc)."""
    children = []
    for pid in all_pids():
        fields = _stat_fields(pid)
        if fields is not None and len(fields) > 1 and fields[1] == str(parent):
            children.append(pid)
    return children


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Poll until ``pid`` is no longer running (it need not be our child); False on timeout."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while is_running(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    return True


def signal_quietly(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` unless the process is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def describe_exit(returncode: int) -> str:
    """``exited with status 2`` or ``was killed by SIGKILL``, from a ``Popen.returncode``."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"
