"""Running a process's components: started in order, stopped in reverse, within a deadline."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from meterflow.errors import MeterflowError
from meterflow.lifecycle.component import Component
from meterflow.lifecycle.supervision import Supervisor, finish

log = logging.getLogger("meterflow.lifecycle")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ComponentEnded(MeterflowError):
    """A component's ``run()`` returned although nobody asked it to stop."""


class ReadinessCollector(Collector):
    """``meterflow_component_ready{component}``: 1 while a component does its work, read when
    scraped."""

    def __init__(self, components: Sequence[Component]) -> None:
        self._components = list(components)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "meterflow_component_ready",
            "1 while the component is started and doing its work, else 0.",
            labels=["component"],
        )
        for component in self._components:
            family.add_metric([component.name], 1.0 if component.ready() else 0.0)
        yield family


async def drive(
    components: Sequence[Component],
    *,
    deadline_s: float,
    registry: CollectorRegistry | None = None,
    on_running: Callable[[], None] = lambda: None,
    stop_signals: Sequence[signal.Signals] = STOP_SIGNALS,
) -> None:
    """Run ``components`` until a stop signal, or until one of them fails.

    1. Start each in order. If one cannot start, stop those already started, in reverse, and
       re-raise its error.
    2. Run all of them at once; call ``on_running``. A stop signal, or any ``run()`` that raises
       or returns unasked, asks every component to stop.
    3. Let each ``run()`` finish the work in hand within ``deadline_s`` (else it is cancelled).
    4. Stop each in reverse order, each within ``deadline_s``.
    5. Raise :class:`~meterflow.lifecycle.supervision.BackgroundTaskFailed` naming the
       components that failed, if any did.
    """
    stopping = asyncio.Event()

    def request_stop() -> None:
        if not stopping.is_set():
            stopping.set()
            for component in components:
                component.request_stop()

    if registry is not None:
        registry.register(ReadinessCollector(components))
    loop = asyncio.get_running_loop()
    for sig in stop_signals:
        loop.add_signal_handler(sig, request_stop)
    started: list[Component] = []
    supervisor = Supervisor(on_failure=request_stop)
    try:
        try:
            for component in components:
                await component.start()
                started.append(component)
            for component in components:
                supervisor.start(_run(component, stopping), name=component.name)
            on_running()
            await stopping.wait()
        finally:
            request_stop()
            for task in supervisor.tasks:
                await finish(task, deadline_s)
            for component in reversed(started):
                await _stop(component, deadline_s)
    finally:
        # Removed last: a second Ctrl-C must not cut the ordered shutdown short.
        for sig in stop_signals:
            loop.remove_signal_handler(sig)
    supervisor.raise_if_failed()


async def _run(component: Component, stopping: asyncio.Event) -> None:
    await component.run()
    if not stopping.is_set():
        raise ComponentEnded(f"{component.name} stopped working on its own")


async def _stop(component: Component, deadline_s: float) -> None:
    try:
        await asyncio.wait_for(component.stop(), deadline_s)
    except TimeoutError:
        log.warning("%s did not stop within %.1fs", component.name, deadline_s)
    except Exception:
        # One component failing to let go must not keep the others from stopping.
        log.exception("stopping %s failed", component.name)
