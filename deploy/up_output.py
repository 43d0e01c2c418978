"""What ``meterflow up`` tells, and whom: quiet children, a record of where the stack listens
for the other commands, and a one-line progress summary while it runs.

* The children log their warnings and errors only (everything at DEBUG), in ``up``'s log
  format; ``up`` itself says when each of them starts, so the URL and key banner is the last
  thing on the terminal once the stack is ready.
* ``<data dir>/stack.json`` (:mod:`meterflow.settings.local_stack`) says where PostgreSQL, Kafka
  and the API listen, from when the database is migrated until ``up`` stops.
* Every ``progress_interval_s`` the events accepted and read per second and the consumer lag,
  read from the children's metrics endpoints: printed while there is traffic or lag, once more
  when it ends, and not at all while the stack sits idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from meterflow.settings import Settings
from meterflow.settings.local_stack import LocalStack, remove_local_stack, write_local_stack

log = logging.getLogger("meterflow.up")

_FETCH_TIMEOUT_S = 2.0


def child_log_env(settings: Settings) -> dict[str, str]:
    """The children's logging: ``up``'s format; warnings and errors, or everything at DEBUG."""
    debug = settings.log_level.upper() == "DEBUG"
    return {
        "METERFLOW_LOG_FORMAT": settings.log_format,
        "METERFLOW_LOG_LEVEL": "DEBUG" if debug else "WARNING",
    }


def record_local_stack(settings: Settings, database_url: str, bootstrap: str, api_url: str) -> None:
    """Tell the other commands where this stack listens (until :func:`forget_local_stack`)."""
    write_local_stack(
        settings.launcher.data_dir, LocalStack(database_url, bootstrap, api_url, os.getpid())
    )


def forget_local_stack(settings: Settings) -> None:
    remove_local_stack(settings.launcher.data_dir, os.getpid())


# -- the progress line -------------------------------------------------------------------------

# Counter samples (after the parser drops ``_total``) that count events, and which labels to keep.
_ACCEPTED = {
    "meterflow_meter_event_requests": {"outcome": "accepted"},
    "meterflow_stream_events": {"outcome": "accepted"},
}
_READ: dict[str, dict[str, str]] = {"meterflow_fold_events": {}}


@dataclass(frozen=True, slots=True)
class Reading:
    """The counters and gauges of one look at the children; None where a child did not answer."""

    at_s: float
    accepted: float | None
    read: float | None
    lag_records: float | None
    lag_seconds: float | None


def _sum_counter(
    families: dict[str, list[tuple[dict[str, str], float]]], wanted: dict[str, dict[str, str]]
) -> float:
    return sum(
        value
        for name, match in wanted.items()
        for labels, value in families.get(name, [])
        if all(labels.get(k) == v for k, v in match.items())
    )


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (family.name, f"{family.name}_total"):
                samples.setdefault(family.name, []).append((sample.labels, sample.value))
    return samples


def take_reading(pages: dict[str, str | None], at_s: float) -> Reading:
    """One :class:`Reading` from the metrics pages of ``ingest`` (or ``ingest 1`` ...
    ``ingest N``, added up), ``aggregator`` and ``alerts`` (None for a child that did not
    answer)."""
    parsed = {name: None if page is None else _samples(page) for name, page in pages.items()}
    aggregator = parsed.get("aggregator")
    ingest = [samples for name, samples in parsed.items() if name.split()[0] == "ingest"]
    accepted: float | None = None
    if ingest and all(samples is not None for samples in ingest):
        accepted = sum(_sum_counter(samples, _ACCEPTED) for samples in ingest if samples)
    consumers = [parsed.get("aggregator"), parsed.get("alerts")]
    lag_records: float | None = None
    lag_seconds: float | None = None
    if all(c is not None for c in consumers):
        records = [
            v for c in consumers if c for _, v in c.get("meterflow_consumer_lag_records", [])
        ]
        seconds = [
            v for c in consumers if c for _, v in c.get("meterflow_consumer_lag_seconds", [])
        ]
        lag_records = sum(records)
        lag_seconds = max(seconds, default=0.0)
    return Reading(
        at_s=at_s,
        accepted=accepted,
        read=None if aggregator is None else _sum_counter(aggregator, _READ),
        lag_records=lag_records,
        lag_seconds=lag_seconds,
    )


def _rate(now: float | None, before: float | None, seconds: float) -> float | None:
    if now is None or before is None or seconds <= 0:
        return None
    return max(0.0, now - before) / seconds


def _number(value: float | None, suffix: str = "") -> str:
    return "?" if value is None else f"{value:,.0f}{suffix}"


def progress_line(before: Reading, now: Reading) -> tuple[str, bool]:
    """The summary between two readings, and whether anything was going on."""
    elapsed = now.at_s - before.at_s
    accepted = _rate(now.accepted, before.accepted, elapsed)
    read = _rate(now.read, before.read, elapsed)
    lag = "lag ?"
    if now.lag_records is not None and now.lag_seconds is not None:
        lag = f"lag {_number(now.lag_records)} records ({now.lag_seconds:.1f}s)"
    line = f"{_number(accepted)} events/s accepted, {_number(read)}/s folded; {lag}"
    active = any(value for value in (accepted, read, now.lag_records))
    return line, bool(active)


def _fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_S) as response:  # noqa: S310
            body: bytes = response.read()
            return body.decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None  # restarting, or stopping: this reading goes without it


class ProgressReporter:
    """The progress line as a :class:`~meterflow.lifecycle.component.Component` of ``up``."""

    name = "progress"

    def __init__(
        self,
        metrics_urls: dict[str, str],
        interval_s: float,
        say: Callable[[str], None],
        *,
        fetch: Callable[[str], str | None] = _fetch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._urls = metrics_urls
        self._interval_s = interval_s
        self._say = say
        self._fetch = fetch
        self._clock = clock
        self._stopping = asyncio.Event()
        self._last: Reading | None = None
        self._was_active = False

    async def start(self) -> None:
        if self._interval_s > 0:
            self._last = await self._read()

    def ready(self) -> bool:
        return True

    async def run(self) -> None:
        while not self._stopping.is_set():
            if self._interval_s <= 0:  # turned off: wait to be stopped
                await self._stopping.wait()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
            if self._stopping.is_set():
                return
            try:
                self.report(await self._read())
            except Exception:  # a progress line is never worth stopping the stack for
                log.debug("progress reading failed", exc_info=True)

    def report(self, reading: Reading) -> None:
        """Say the summary since the previous reading, unless the stack is and was idle."""
        before, self._last = self._last, reading
        if before is None:
            return
        line, active = progress_line(before, reading)
        if active or self._was_active:
            self._say(line)
        self._was_active = active

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        pass

    async def _read(self) -> Reading:
        names: Iterable[str] = self._urls
        pages = await asyncio.gather(
            *(asyncio.to_thread(self._fetch, self._urls[name]) for name in names)
        )
        return take_reading(dict(zip(self._urls, pages, strict=True)), self._clock())
