"""meterflow services as child processes: started, awaited until ready, supervised, stopped.

Each child runs in a session of its own, so a terminal's Ctrl-C reaches only the launcher, which
stops the children in order; and it gets SIGTERM from the kernel if the launcher dies without
stopping it (:func:`~deploy.processes.die_with_parent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from deploy.processes import describe_exit, die_with_parent
from deploy.restarts import CrashLoop, RestartBackoff, RestartPolicy
from meterflow.errors import LauncherError

READY_TIMEOUT_S = 30.0
_WATCH_INTERVAL_S = 0.2
_PROBE_INTERVAL_S = 0.1
_TAIL_LINES = 20
_TAIL_BYTES = 16_384


def say(message: str) -> None:
    """A line of ``meterflow up``'s own output."""
    print(f"meterflow up: {message}", flush=True)


@dataclass
class ChildService:
    """A meterflow component running as a child process.

    Its output goes to ``log_path`` when given (appended), else to this process's own.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Start (or start again) the child; from the main thread, so it dies with us."""
        if self._log is None and self.log_path is not None:
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=None if self._log is None else subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - only calls prctl
        )

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_description(self) -> str:
        """Why the child is not running: ``exited with status 2``, ``was killed by SIGKILL``."""
        code = None if self.process is None else self.process.poll()
        return "is running" if code is None else describe_exit(code)

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        """The last lines of the child's log file; empty if it logs to our output."""
        if self.log_path is None:
            return ""
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(log.seek(0, 2) - _TAIL_BYTES, 0))
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self, deadline_s: float) -> None:
        try:
            self._terminate(deadline_s)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def _terminate(self, deadline_s: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop within {deadline_s:.0f}s; killing it")
            self.process.kill()
            self.process.wait()


def meterflow_child(
    command: str, env: dict[str, str], log_path: Path | None = None, *, name: str | None = None
) -> ChildService:
    """``meterflow <command>`` (``ingest``, ``aggregator``, ``alerts``) with this interpreter, as a
    child named ``name`` (default: the command)."""
    return ChildService(
        name or command, [sys.executable, "-m", "deploy.cli", command], env, log_path=log_path
    )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - our own URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_http_ready(url: str, child: ChildService, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise LauncherError(f"{child.name} exited during start-up")
        if _answers(url):
            return
        time.sleep(_PROBE_INTERVAL_S)
    raise LauncherError(f"{child.name} was not ready at {url} within {timeout_s:.0f}s")


class ChildCrashLooping(LauncherError):
    """A supervised child died too often for restarting it to help."""


class ServiceProcess:
    """A child service as a supervised :class:`~meterflow.lifecycle.component.Component`.

    ``start()`` starts it and waits until ``ready_url`` answers 200 (a child that cannot start
    the first time stops the launch). ``run()`` watches it: when it dies unasked, it says why and
    starts it again after the delay its :class:`~deploy.restarts.RestartPolicy` gives, and raises
    :class:`ChildCrashLooping` when the policy gives up. ``stop()`` sends SIGTERM, then SIGKILL
    past ``deadline_s``. ``restarts`` counts restarts by the reason for them.
    """

    def __init__(
        self,
        child: ChildService,
        ready_url: str,
        deadline_s: float,
        *,
        say: Callable[[str], None] = say,
        ready_timeout_s: float = READY_TIMEOUT_S,
        policy: RestartPolicy | None = None,
    ) -> None:
        self.child = child
        self._ready_url = ready_url
        self._deadline_s = deadline_s
        self._say = say
        self._ready_timeout_s = ready_timeout_s
        self._backoff = RestartBackoff(policy or RestartPolicy())
        self._ready_since: float | None = None
        self._stopping = asyncio.Event()
        self.restarts: Counter[str] = Counter()
        self.gave_up: str | None = None

    @property
    def name(self) -> str:
        return self.child.name

    def alive(self) -> bool:
        return self.child.alive()

    async def start(self) -> None:
        if self._stopping.is_set():  # a stop signal came while earlier services were starting
            return
        failure = await self._launch()
        if failure is not None:
            await self.stop()
            raise LauncherError(f"{self.name} {failure}{self._tail()}")

    def ready(self) -> bool:
        return self._ready_since is not None and self.child.alive()

    async def run(self) -> None:
        while not self._stopping.is_set():
            if self.child.alive():
                await self._pause(_WATCH_INTERVAL_S)
                continue
            await self._restart(self.child.exit_description())

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        await asyncio.to_thread(self.child.stop, self._deadline_s)
        self._say(f"{self.name} stopped")

    async def _restart(self, why: str) -> None:
        """Say why the child died; start it again after the policy's delay, until it is ready."""
        pid = self.child.pid
        while not self._stopping.is_set():
            now = time.monotonic()
            healthy_s = 0.0 if self._ready_since is None else now - self._ready_since
            self._ready_since = None
            verdict = self._backoff.died(now, healthy_s)
            tail = self._tail()
            if isinstance(verdict, CrashLoop):
                self.gave_up = f"died {verdict.deaths} times within {verdict.window_s:.0f}s"
                message = (
                    f"{self.name} (pid {pid}) {why}; it {self.gave_up}, so it is crash-looping"
                )
                self._say(f"{message}; not restarting it, stopping the stack{tail}")
                raise ChildCrashLooping(message)
            self._say(f"{self.name} (pid {pid}) {why}; restarting it in {verdict:.1f}s{tail}")
            self.restarts[why] += 1
            await self._pause(verdict)
            if self._stopping.is_set():
                return
            failure = await self._launch()
            if failure is None:
                return
            pid, why = self.child.pid, failure
            await asyncio.to_thread(self.child.stop, self._deadline_s)

    async def _launch(self) -> str | None:
        """Start the child and wait until it answers (or a stop is asked for); None then, else
        what went wrong."""
        self.child.start()  # on the event loop's thread: the main one, see die_with_parent
        self._say(f"{self.name} started (pid {self.child.pid})")
        deadline = time.monotonic() + self._ready_timeout_s
        while not self._stopping.is_set():
            if not self.child.alive():
                return f"{self.child.exit_description()} during start-up"
            if await asyncio.to_thread(_answers, self._ready_url):
                self._ready_since = time.monotonic()
                return None
            if time.monotonic() >= deadline:
                return f"was not ready at {self._ready_url} within {self._ready_timeout_s:.0f}s"
            await self._pause(_PROBE_INTERVAL_S)
        return None  # asked to stop: not a failure; stop() ends the child

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _tail(self) -> str:
        tail = self.child.log_tail()
        return f"; its log ({self.child.log_path}) ends with:\n{tail}" if tail else ""
