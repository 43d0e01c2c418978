"""Running a load: workers in this process or in several, progress each second, one result.

``run_load`` is the programmatic entry point (the CLI, the benchmark suite and the smoke test use
it). With ``workers=0`` the lanes run on the caller's event loop; otherwise each worker is a
process of its own (spawned, uvloop), started together once every one has connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue as queue_module
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from loadtest.client import HttpClient
from loadtest.expected_totals import ExpectedTotals, SeriesKey
from loadtest.outcomes import Snapshot, WorkerResult
from loadtest.plan import LoadConfig, RunSetup
from loadtest.progress import ProgressBoard
from loadtest.report import load_report
from loadtest.stream_sessions import StreamUnavailable, session_from
from loadtest.wire import RequestEncoder, host_and_port
from loadtest.worker import Worker, WorkerPlan, worker_plans
from loadtest.worker_process import worker_process_main
from meterflow.errors import MeterflowError

_START_DELAY_S = 0.2  # between "all connected" and the first request
_READY_TIMEOUT_S = 60.0
_POLL_S = 0.02
_JOIN_TIMEOUT_S = 10.0


class GeneratorFailed(MeterflowError):
    """A worker could not connect or crashed."""


@dataclass(slots=True)
class LoadResult:
    report: dict[str, Any]
    expected: ExpectedTotals | None
    unresolved: set[SeriesKey]


async def probe_stream(base_url: str, key: str, timeout_s: float = 10.0) -> None:
    """Raise :class:`StreamUnavailable` unless the server opens a stream session for ``key``."""
    host, port = host_and_port(base_url)
    client = HttpClient(host, port, timeout_s)
    try:
        response = await client.request(RequestEncoder(base_url).session(key))
        session_from(response, time.time())
    finally:
        client.close()


async def run_load(
    config: LoadConfig, setup: RunSetup, *, label: str = "load", out: TextIO | None = sys.stderr
) -> LoadResult:
    if config.mode == "stream":
        await probe_stream(setup.base_url, setup.accounts[0].secret_key)
    plans = worker_plans(config, setup)
    board = ProgressBoard(len(plans), label, out)
    if config.workers == 0:
        results = [await _in_process(plans[0], board)]
    else:
        results = await _in_processes(plans, board)
    board.print_due(final=True)
    expected: ExpectedTotals | None = None
    unresolved: set[SeriesKey] = set()
    for result in results:
        unresolved |= result.unresolved
        if result.expected is not None:
            if expected is None:
                expected = result.expected
            else:
                expected.merge(result.expected)
    report = load_report(config, setup, results, board.timeline(), label)
    return LoadResult(report, expected, unresolved)


async def _print_every_second(board: ProgressBoard) -> None:
    while True:
        await asyncio.sleep(0.25)
        board.print_due()


async def _in_process(plan: WorkerPlan, board: ProgressBoard) -> WorkerResult:
    worker = Worker(plan, board.add)
    try:
        await worker.prepare()
    except BaseException:
        worker.close()
        raise
    board.start_at = time.time() + _START_DELAY_S
    printer = asyncio.create_task(_print_every_second(board))
    try:
        return await worker.run(board.start_at)
    finally:
        printer.cancel()


async def _in_processes(plans: list[WorkerPlan], board: ProgressBoard) -> list[WorkerResult]:
    context = multiprocessing.get_context("spawn")
    messages: Any = context.Queue()
    go = context.Event()
    start_at = context.Value("d", 0.0)
    processes = [
        context.Process(
            target=worker_process_main,
            args=(plan, messages, go, start_at),
            name=f"loadtest-worker-{plan.worker}",
            daemon=True,
        )
        for plan in plans
    ]
    for process in processes:
        process.start()
    try:
        await _wait_ready(messages, processes, len(plans))
        start_at.value = time.time() + _START_DELAY_S
        board.start_at = start_at.value
        go.set()
        return await _collect(messages, processes, board, len(plans))
    finally:
        go.set()  # a worker still waiting must not wait for its timeout
        for process in processes:
            await asyncio.to_thread(process.join, _JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()


async def _next_message(messages: Any, processes: list[Any], deadline: float) -> Any:
    while True:
        with contextlib.suppress(queue_module.Empty):
            return messages.get_nowait()
        if time.time() > deadline:
            raise GeneratorFailed("workers stopped reporting")
        if any(p.exitcode not in (None, 0) for p in processes):
            raise GeneratorFailed(
                "a worker process died: "
                + ", ".join(f"{p.name} exit {p.exitcode}" for p in processes if p.exitcode)
            )
        await asyncio.sleep(_POLL_S)


async def _wait_ready(messages: Any, processes: list[Any], workers: int) -> None:
    deadline = time.time() + _READY_TIMEOUT_S
    ready = 0
    while ready < workers:
        message = await _next_message(messages, processes, deadline)
        if message[0] == "ready":
            ready += 1
        elif message[0] == "unavailable":
            raise StreamUnavailable(message[2])
        elif message[0] == "failed":
            raise GeneratorFailed(f"worker {message[1]} failed to start:\n{message[2]}")


async def _collect(
    messages: Any, processes: list[Any], board: ProgressBoard, workers: int
) -> list[WorkerResult]:
    results: list[WorkerResult] = []
    quiet_deadline = time.time() + _READY_TIMEOUT_S
    while len(results) < workers:
        message = await _next_message(messages, processes, quiet_deadline)
        quiet_deadline = time.time() + _READY_TIMEOUT_S  # workers report every second
        kind = message[0]
        if kind == "progress":
            snapshot: Snapshot = message[1]
            board.add(snapshot)
            board.print_due()
        elif kind == "done":
            results.append(message[1])
        elif kind == "unavailable":
            raise StreamUnavailable(message[2])
        elif kind == "failed":
            raise GeneratorFailed(f"worker {message[1]} failed:\n{message[2]}")
    return sorted(results, key=lambda r: r.worker)
