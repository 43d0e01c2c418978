"""The lifecycle driver: start in order, stop in reverse, and a failing part stops the whole."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from prometheus_client import CollectorRegistry

from meterflow.lifecycle.driver import drive
from meterflow.lifecycle.supervision import BackgroundTaskFailed


class Broken(RuntimeError):
    pass


class Part:
    """A component that records what the driver did to it."""

    def __init__(
        self,
        name: str,
        journal: list[str],
        *,
        fail_start: bool = False,
        fail_run: bool = False,
        return_early: bool = False,
    ) -> None:
        self._name = name
        self._journal = journal
        self._fail_start = fail_start
        self._fail_run = fail_run
        self._return_early = return_early
        self._stopping = asyncio.Event()
        self._started = False

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        if self._fail_start:
            raise Broken(f"{self._name} cannot start")
        self._started = True
        self._journal.append(f"start {self._name}")

    def ready(self) -> bool:
        return self._started and not self._stopping.is_set()

    async def run(self) -> None:
        if self._fail_run:
            raise Broken(f"{self._name} broke")
        if self._return_early:
            return
        await self._stopping.wait()
        self._journal.append(f"ran {self._name}")

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        self._journal.append(f"stop {self._name}")


async def test_components_start_in_order_and_stop_in_reverse_on_a_signal() -> None:
    journal: list[str] = []
    parts = [Part("a", journal), Part("b", journal), Part("c", journal)]
    registry = CollectorRegistry()

    def on_running() -> None:
        journal.append("running")
        assert registry.get_sample_value("meterflow_component_ready", {"component": "b"}) == 1
        os.kill(os.getpid(), signal.SIGTERM)

    await asyncio.wait_for(
        drive(parts, deadline_s=1.0, registry=registry, on_running=on_running), 5
    )
    assert journal[:4] == ["start a", "start b", "start c", "running"]
    assert sorted(journal[4:7]) == ["ran a", "ran b", "ran c"]
    assert journal[7:] == ["stop c", "stop b", "stop a"]
    assert registry.get_sample_value("meterflow_component_ready", {"component": "b"}) == 0


async def test_a_component_that_fails_stops_the_others_and_is_reported() -> None:
    journal: list[str] = []
    parts = [Part("fold", journal), Part("relay", journal, fail_run=True)]
    with pytest.raises(BackgroundTaskFailed, match="relay"):
        await asyncio.wait_for(drive(parts, deadline_s=1.0), 5)
    assert "ran fold" in journal
    assert journal[-2:] == ["stop relay", "stop fold"]


async def test_a_component_that_returns_unasked_counts_as_failed() -> None:
    journal: list[str] = []
    parts = [Part("fold", journal), Part("child", journal, return_early=True)]
    with pytest.raises(BackgroundTaskFailed, match="child"):
        await asyncio.wait_for(drive(parts, deadline_s=1.0), 5)
    assert journal[-2:] == ["stop child", "stop fold"]


async def test_a_component_that_cannot_start_stops_those_already_started() -> None:
    journal: list[str] = []
    parts = [Part("a", journal), Part("b", journal, fail_start=True), Part("c", journal)]
    with pytest.raises(Broken, match="b cannot start"):
        await asyncio.wait_for(drive(parts, deadline_s=1.0), 5)
    assert journal == ["start a", "stop a"]
