"""Background tasks that must not die quietly.

The aggregator runs the usage relay, error reports and webhooks, and maintenance beside the fold.
If one of them ends with an error, nothing of its work is lost (each keeps its progress in
PostgreSQL or Kafka), but nothing would do that work any more either. So the process stops, and
exits non-zero, for its supervisor (``meterflow up``, systemd, Kubernetes) to act on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from meterflow.errors import LauncherError, MeterflowError

log = logging.getLogger("meterflow.aggregator")


class BackgroundTaskFailed(MeterflowError):
    """A background task ended with an error; the process stopped because of it."""


class Supervisor:
    """Starts background tasks and calls ``on_failure`` once when any of them fails."""

    def __init__(self, on_failure: Callable[[], None]) -> None:
        self._on_failure = on_failure
        self.tasks: list[asyncio.Task[None]] = []
        self.failed: list[str] = []

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._ended)
        self.tasks.append(task)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (error := task.exception()) is None:
            return
        if isinstance(error, LauncherError):  # written for the operator; a traceback adds noise
            log.error("%s failed; stopping: %s", task.get_name(), error)
        else:
            log.error("%s failed; stopping", task.get_name(), exc_info=error)
        self.failed.append(task.get_name())
        if len(self.failed) == 1:
            self._on_failure()

    def raise_if_failed(self) -> None:
        if self.failed:
            raise BackgroundTaskFailed(f"background task failed: {', '.join(self.failed)}")


async def finish(task: asyncio.Task[None], deadline_s: float) -> None:
    """Let a stopping task end within the deadline, else cancel it. A task that already failed
    was reported by its :class:`Supervisor`; its error does not interrupt the shutdown."""
    try:
        await asyncio.wait_for(task, deadline_s)
    except TimeoutError:
        log.warning("%s still running at shutdown; cancelled", task.get_name())
    except Exception:  # logged when it happened, see Supervisor._ended
        if not task.done() or task.cancelled() or task.exception() is None:
            raise
