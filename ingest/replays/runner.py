"""Running re-drives in the ingest process that accepted them, in the background.

Each re-drive has a database connection of its own (never one of the request pool's, which a
shutdown waits for) and writes its progress to its row at most once a second
(:mod:`meterflow.replay.jobs`); any ingest process answers ``GET`` from the row. If the process
stops first, the re-drive is cancelled with its event loop and closes its Kafka clients and
connection; its row's heartbeat stops, and the replay reads as failed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from meterflow.replay.jobs import finish_job, record_progress
from meterflow.replay.redrive import Redrive
from meterflow.replay.rejections import RedriveCounts, RedriveFilter
from meterflow.settings import Settings

log = logging.getLogger("meterflow.ingest.replays")

PROGRESS_INTERVAL_S = 1.0


class ReplayRunner:
    def __init__(self, settings: Settings) -> None:
        assert settings.database_url is not None  # noqa: S101 - ingest needs it to start
        assert settings.kafka_bootstrap_servers is not None  # noqa: S101 - checked by the API
        self._database_url = settings.database_url
        self._bootstrap = settings.kafka_bootstrap_servers
        self._prefix = settings.topic_prefix
        self._security = settings.kafka
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, job_id: str, selection: RedriveFilter) -> None:
        task = asyncio.create_task(self._run(job_id, selection), name=f"replay-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job_id: str, selection: RedriveFilter) -> None:
        try:
            conn = await asyncpg.connect(self._database_url)
        except Exception:
            log.exception("replay %s could not connect to the database", job_id)
            return  # the row's heartbeat never moves: it reads as failed
        try:
            await self._redrive(conn, job_id, selection)
        finally:
            await conn.close()

    async def _redrive(
        self, conn: asyncpg.Connection, job_id: str, selection: RedriveFilter
    ) -> None:
        redrive = Redrive(conn, self._bootstrap, self._prefix, selection, security=self._security)
        written = time.monotonic()

        async def progress(counts: RedriveCounts) -> None:
            nonlocal written
            if time.monotonic() - written >= PROGRESS_INTERVAL_S:
                written = time.monotonic()
                await record_progress(conn, job_id, counts, _now_ms())

        try:
            counts = await redrive.run(progress)
        except Exception as exc:
            log.exception("replay %s failed", job_id)
            message = f"The replay stopped on an error ({type(exc).__name__}); start it again."
            await finish_job(conn, job_id, redrive.counts, _now_ms(), message)
            return
        await finish_job(conn, job_id, counts, _now_ms())


def _now_ms() -> int:
    return int(time.time() * 1000)
