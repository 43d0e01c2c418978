"""The lifecycle every long-running part of a meterflow process follows.

``start()`` connects and subscribes (and raises if it cannot); ``run()`` does the work until
``request_stop()``; ``stop()`` releases what ``start()`` took. ``ready()`` says whether the
component is doing its work now, for health reporting. :func:`meterflow.lifecycle.driver.drive`
runs a list of them; the aggregator, the alert evaluator and ``meterflow up`` (whose components
are child processes) all go through it.
"""

from __future__ import annotations

from typing import Protocol


class Component(Protocol):
    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    def ready(self) -> bool: ...

    async def run(self) -> None:
        """Work until :meth:`request_stop`; returning earlier counts as a failure."""

    def request_stop(self) -> None:
        """Ask :meth:`run` to end once the work in hand is done; never blocks."""

    async def stop(self) -> None:
        """Release what :meth:`start` took (the driver bounds it with the shutdown deadline)."""
