"""Background tasks that fail stop the process instead of dying quietly."""

import asyncio

import pytest

from meterflow.lifecycle.supervision import BackgroundTaskFailed, Supervisor, finish


class Broken(RuntimeError):
    pass


async def test_a_failing_task_asks_for_a_stop_once_and_is_reported_after_shutdown() -> None:
    stops: list[str] = []
    quiet = asyncio.Event()
    supervisor = Supervisor(on_failure=lambda: stops.append("stop"))

    async def fails() -> None:
        raise Broken("relay bug")

    async def runs_until_stopped() -> None:
        await quiet.wait()

    failing = [
        supervisor.start(fails(), name="usage-relay"),
        supervisor.start(fails(), name="maintenance"),
    ]
    steady = supervisor.start(runs_until_stopped(), name="notifications")
    # The supervisor's done callbacks were added first, so they have run once these are awaited.
    await asyncio.wait_for(asyncio.gather(*failing, return_exceptions=True), 5)
    assert supervisor.failed == ["usage-relay", "maintenance"]
    assert stops == ["stop"]
    quiet.set()
    for task in supervisor.tasks:
        await finish(task, 1.0)  # a failed task's error does not interrupt the shutdown
    assert steady.done()
    assert steady.exception() is None
    with pytest.raises(BackgroundTaskFailed, match="usage-relay, maintenance"):
        supervisor.raise_if_failed()


async def test_tasks_that_end_cleanly_or_are_cancelled_are_not_failures() -> None:
    supervisor = Supervisor(on_failure=lambda: pytest.fail("no task failed"))

    async def ends() -> None:
        return None

    async def hangs() -> None:
        await asyncio.Event().wait()

    supervisor.start(ends(), name="ends")
    hung = supervisor.start(hangs(), name="hangs")
    await finish(hung, 0.05)  # past its deadline: cancelled
    await finish(supervisor.tasks[0], 1.0)
    assert hung.cancelled()
    supervisor.raise_if_failed()
