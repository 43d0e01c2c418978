"""meterflow services as child processes: started, awaited until ready, watched, stopped."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from meterflow.errors import LauncherError

READY_TIMEOUT_S = 30.0
_WATCH_INTERVAL_S = 0.2


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
        if self.log_path is None:
            self.process = subprocess.Popen(self.argv, env=self.env)
            return
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

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
    command: str, env: dict[str, str], log_path: Path | None = None
) -> ChildService:
    """``meterflow <command>`` (``ingest``, ``aggregator``, ``alerts``) with this interpreter, as a
    child."""
    return ChildService(
        command, [sys.executable, "-m", "deploy.cli", command], env, log_path=log_path
    )


def wait_http_ready(url: str, child: ChildService, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise LauncherError(f"{child.name} exited during start-up")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - our own URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise LauncherError(f"{child.name} was not ready at {url} within {timeout_s:.0f}s")


class ServiceProcess:
    """A child service as a :class:`~meterflow.lifecycle.component.Component`: started and awaited
    until ``ready_url`` answers 200, watched while it runs (``run()`` returns if it exits), and
    stopped with SIGTERM, then SIGKILL past ``deadline_s``."""

    def __init__(
        self,
        child: ChildService,
        ready_url: str,
        deadline_s: float,
        say: Callable[[str], None] = say,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.child = child
        self._ready_url = ready_url
        self._deadline_s = deadline_s
        self._say = say
        self._ready_timeout_s = ready_timeout_s
        self._ready = False
        self._stopping = asyncio.Event()

    @property
    def name(self) -> str:
        return self.child.name

    def alive(self) -> bool:
        return self.child.alive()

    async def start(self) -> None:
        self.child.start()
        await asyncio.to_thread(wait_http_ready, self._ready_url, self.child, self._ready_timeout_s)
        self._ready = True

    def ready(self) -> bool:
        return self._ready and self.child.alive()

    async def run(self) -> None:
        while not self._stopping.is_set():
            if not self.child.alive():
                process = self.child.process
                status = None if process is None else process.returncode
                self._say(f"{self.name} exited with status {status}")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _WATCH_INTERVAL_S)

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        await asyncio.to_thread(self.child.stop, self._deadline_s)
        self._say(f"{self.name} stopped")
