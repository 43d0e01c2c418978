"""Supervised child processes: restarted with backoff when they die, given up on when they
crash-loop, and never outliving a killed launcher. Stand-in services keep these fast; the real
stack is exercised in test_up.py."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest

from deploy.children import ChildService, ServiceProcess
from deploy.ports import free_port
from deploy.processes import is_running
from deploy.restarts import RestartPolicy
from meterflow.errors import LauncherError
from meterflow.lifecycle.driver import drive
from meterflow.lifecycle.supervision import BackgroundTaskFailed
from tests.fixtures.meter_events import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

FAST = RestartPolicy(
    first_delay_s=0.1,
    max_delay_s=1.0,
    healthy_after_s=60.0,
    crash_loop_deaths=4,
    crash_loop_window_s=60.0,
)
_DEADLINE_S = 5.0


def _fake(name: str, port: int, log: Path, *crash: str) -> ChildService:
    argv = [sys.executable, "-m", "tests.fixtures.fake_service", str(port), *crash]
    return ChildService(name, argv, {}, log_path=log)


def _supervised(
    child: ChildService, port: int, said: list[str], policy: RestartPolicy = FAST
) -> ServiceProcess:
    return ServiceProcess(
        child, f"http://127.0.0.1:{port}/ready", _DEADLINE_S, say=said.append, policy=policy
    )


def _kill(service: ServiceProcess) -> None:
    """SIGKILL the service's child, as a crash would."""
    assert service.child.process is not None
    service.child.process.send_signal(signal.SIGKILL)


async def test_a_killed_child_is_restarted_and_why_it_died_is_said(tmp_path: Path) -> None:
    port = free_port()
    said: list[str] = []
    service = _supervised(_fake("fake", port, tmp_path / "fake.log"), port, said)
    await service.start()
    first_pid = service.child.pid
    assert first_pid is not None
    watching = asyncio.create_task(service.run())
    try:
        _kill(service)

        async def restarted() -> bool:
            return service.ready() and service.child.pid != first_pid

        await wait_until(restarted, 20, "the killed child to be restarted and ready")
        death = next(line for line in said if "killed" in line)
        assert death.startswith(f"fake (pid {first_pid}) was killed by SIGKILL; restarting it in")
        assert f"fake service {first_pid} listening on {port}" in death  # the log's tail
        assert service.restarts == {"was killed by SIGKILL": 1}
        assert not watching.done()
    finally:
        service.request_stop()
        await asyncio.wait_for(watching, 5)
        await service.stop()
    assert not service.alive()


async def test_a_crash_looping_child_stops_everything_with_a_clear_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    steady_port, crashing_port = free_port(), free_port()
    said: list[str] = []
    steady = _supervised(_fake("steady", steady_port, tmp_path / "steady.log"), steady_port, said)
    crashing = _supervised(
        _fake("crashing", crashing_port, tmp_path / "crashing.log", "0.3", "3"), crashing_port, said
    )
    started = time.monotonic()
    with pytest.raises(BackgroundTaskFailed, match="crashing"):
        await asyncio.wait_for(drive([steady, crashing], deadline_s=_DEADLINE_S), 40)

    assert crashing.gave_up == "died 4 times within 60s"
    assert crashing.restarts == {"exited with status 3": 3}
    deaths = [line for line in said if line.startswith("crashing (pid")]
    assert len(deaths) == 4
    assert all("exited with status 3" in line for line in deaths)
    assert "so it is crash-looping; not restarting it, stopping the stack" in deaths[-1]
    assert "fake service: out of cheese" in deaths[-1]
    # Between restarts: 0.1 s, 0.2 s, 0.4 s, so at least 0.7 s plus four runs of 0.3 s.
    assert time.monotonic() - started > 0.7 + 4 * 0.3
    assert not steady.alive()
    assert not crashing.alive()
    assert steady.restarts == {}
    (failed,) = [r for r in caplog.records if "failed; stopping" in r.getMessage()]
    assert failed.getMessage().startswith("crashing failed; stopping: crashing (pid")
    assert failed.exc_info is None  # the message says it all; no traceback


async def test_a_stop_during_the_backoff_does_not_wait_for_it(tmp_path: Path) -> None:
    port = free_port()
    said: list[str] = []
    slow = RestartPolicy(first_delay_s=30.0, max_delay_s=30.0)
    service = _supervised(_fake("fake", port, tmp_path / "fake.log"), port, said, slow)
    await service.start()
    watching = asyncio.create_task(service.run())
    _kill(service)

    async def backing_off() -> bool:
        return any("restarting it in 30.0s" in line for line in said)

    await wait_until(backing_off, 10, "the restart to be scheduled")
    service.request_stop()
    await asyncio.wait_for(watching, 2)
    await service.stop()
    assert service.restarts == {"was killed by SIGKILL": 1}


async def test_a_child_that_cannot_start_stops_the_launch(tmp_path: Path) -> None:
    """The first start is not retried: the cause is more likely the setup than bad luck."""
    port = free_port()
    said: list[str] = []
    child = ChildService(
        "broken",
        [sys.executable, "-c", "print('no config'); raise SystemExit(2)"],
        {},
        log_path=tmp_path / "broken.log",
    )
    service = _supervised(child, port, said)
    with pytest.raises(
        LauncherError, match=r"(?s)broken exited with status 2 during start-up.*no config"
    ):
        await service.start()


_LAUNCHER = """
import sys, time
from deploy.children import ChildService
child = ChildService("fake", [sys.executable, "-m", "tests.fixtures.fake_service", sys.argv[1]], {})
child.start()
print(child.pid, flush=True)
time.sleep(60)
"""


async def test_children_die_with_a_killed_launcher() -> None:
    launcher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _LAUNCHER, str(free_port()), stdout=asyncio.subprocess.PIPE
    )
    assert launcher.stdout is not None
    child_pid = int(await asyncio.wait_for(launcher.stdout.readline(), 10))
    assert is_running(child_pid)
    launcher.send_signal(signal.SIGKILL)
    await launcher.wait()

    async def gone() -> bool:
        return not is_running(child_pid)

    await wait_until(gone, 10, f"the launcher's child (pid {child_pid}) to end")
