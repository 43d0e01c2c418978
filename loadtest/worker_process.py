"""The entry point of a worker process (multiprocessing, spawn): uvloop, one Worker, a queue home.

Messages to the parent: ``("ready", worker)``, ``("progress", Snapshot)``,
``("done", WorkerResult)``, ``("unavailable", worker, text)`` for a server without the stream, and
``("failed", worker, text)``.
"""

from __future__ import annotations

import asyncio
import traceback
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any

import uvloop

from loadtest.stream_sessions import StreamUnavailable
from loadtest.worker import Worker, WorkerPlan
from meterflow.runtime import tune_garbage_collector

_GO_TIMEOUT_S = 120.0


def worker_process_main(
    plan: WorkerPlan, queue: Queue[Any], go: Event, start_at: Synchronized[float]
) -> None:
    tune_garbage_collector()  # the generator shares the cores with what it measures
    uvloop.run(_serve(plan, queue, go, start_at))


async def _serve(
    plan: WorkerPlan, queue: Queue[Any], go: Event, start_at: Synchronized[float]
) -> None:
    worker = Worker(plan, lambda snapshot: queue.put(("progress", snapshot)))
    try:
        await worker.prepare()
        queue.put(("ready", plan.worker))
        started = await asyncio.get_running_loop().run_in_executor(None, go.wait, _GO_TIMEOUT_S)
        if not started:
            queue.put(("failed", plan.worker, "no start signal from the parent"))
            return
        queue.put(("done", await worker.run(start_at.value)))
    except StreamUnavailable as exc:
        queue.put(("unavailable", plan.worker, str(exc)))
    except Exception:  # reported to the parent, which fails the run with it
        queue.put(("failed", plan.worker, traceback.format_exc(limit=8)))
    finally:
        worker.close()
