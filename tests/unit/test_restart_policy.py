"""The restart rules of ``meterflow up``: backoff, its reset, and the crash-loop verdict."""

from __future__ import annotations

import signal

import pytest

from deploy.processes import describe_exit
from deploy.restarts import CrashLoop, RestartBackoff, RestartPolicy

POLICY = RestartPolicy(
    first_delay_s=0.5,
    max_delay_s=4.0,
    healthy_after_s=60.0,
    crash_loop_deaths=5,
    crash_loop_window_s=60.0,
)


def _verdicts(deaths: list[tuple[float, float]]) -> list[float | CrashLoop]:
    backoff = RestartBackoff(POLICY)
    return [backoff.died(at_s, healthy_s) for at_s, healthy_s in deaths]


@pytest.mark.parametrize(
    ("deaths", "expected"),
    [
        # Each death after a short run: the delay doubles.
        ([(0, 0), (20, 5), (40, 5)], [0.5, 1.0, 2.0]),
        # Doubling stops at the cap (deaths spread out, so no crash loop).
        ([(0, 0), (61, 0), (122, 0), (183, 0), (244, 0), (305, 0)], [0.5, 1, 2, 4, 4, 4]),
        # A child that was healthy for a while starts over from the first delay.
        ([(0, 0), (20, 0), (100, 60), (110, 0)], [0.5, 1.0, 0.5, 1.0]),
        # Healthy, but not for long enough: no reset.
        ([(0, 0), (20, 0), (100, 59.9)], [0.5, 1.0, 2.0]),
        # The fifth death within the window: a crash loop, however healthy the runs were.
        ([(0, 0), (1, 0), (3, 0), (6, 0), (11, 0)], [0.5, 1, 2, 4, CrashLoop(5, 60.0)]),
        # Five deaths, but the first fell out of the window before the fifth.
        ([(0, 0), (1, 0), (3, 0), (6, 0), (60, 0)], [0.5, 1, 2, 4, 4]),
    ],
    ids=["doubles", "capped", "reset-after-healthy-run", "no-early-reset", "crash-loop", "window"],
)
def test_restart_delays_and_crash_loops(
    deaths: list[tuple[float, float]], expected: list[float | CrashLoop]
) -> None:
    assert _verdicts(deaths) == expected


def test_crash_loop_counts_deaths_in_a_sliding_window() -> None:
    backoff = RestartBackoff(POLICY)
    for at_s in (0, 30, 59):
        assert not isinstance(backoff.died(at_s, 0.0), CrashLoop)
    # At 100 only the deaths at 59 and 100 are within 60 s.
    assert not isinstance(backoff.died(100, 0.0), CrashLoop)
    for at_s in (101, 102):
        assert not isinstance(backoff.died(at_s, 0.0), CrashLoop)
    assert backoff.died(103, 0.0) == CrashLoop(5, 60.0)


@pytest.mark.parametrize(
    ("returncode", "text"),
    [
        (0, "exited with status 0"),
        (2, "exited with status 2"),
        (-signal.SIGKILL, "was killed by SIGKILL"),
        (-signal.SIGSEGV, "was killed by SIGSEGV"),
        (-200, "was killed by signal 200"),
    ],
)
def test_exit_descriptions(returncode: int, text: str) -> None:
    assert describe_exit(returncode) == text
