"""When ``meterflow up`` restarts a child that died, and when it gives up: pure rules, no clock.

A dead child is restarted after a delay that starts at ``first_delay_s`` and doubles with each
death, up to ``max_delay_s``; once a child has been ready for ``healthy_after_s`` the delay starts
over. ``crash_loop_deaths`` deaths within ``crash_loop_window_s`` mean restarting does not help:
the launcher stops the stack instead.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    healthy_after_s: float = 60.0
    crash_loop_deaths: int = 5
    crash_loop_window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class CrashLoop:
    """The verdict when a child died too often: ``deaths`` within ``window_s``."""

    deaths: int
    window_s: float


class RestartBackoff:
    """One child's deaths, and what each of them means under a :class:`RestartPolicy`."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._deaths: deque[float] = deque()
        self._next_delay_s = policy.first_delay_s

    def died(self, at_s: float, healthy_for_s: float) -> float | CrashLoop:
        """The delay before restarting a child that died at ``at_s`` (a monotonic reading) after
        being ready for ``healthy_for_s`` (0 if it never was), or :class:`CrashLoop`."""
        policy = self.policy
        if healthy_for_s >= policy.healthy_after_s:
            self._next_delay_s = policy.first_delay_s
        self._deaths.append(at_s)
        while self._deaths and self._deaths[0] <= at_s - policy.crash_loop_window_s:
            self._deaths.popleft()
        if len(self._deaths) >= policy.crash_loop_deaths:
            return CrashLoop(len(self._deaths), policy.crash_loop_window_s)
        delay_s = self._next_delay_s
        self._next_delay_s = min(delay_s * 2, policy.max_delay_s)
        return delay_s
