"""Re-drives started over HTTP (``POST /v1/meterflow/replays``): their rows in
``rejected_replays``, written by the process running them and read by any process.

The running process writes progress and a heartbeat about once a second. A ``running`` row whose
heartbeat is older than :data:`STALE_AFTER_MS` was left by a process that stopped: it reads as
``failed``, and another re-drive of the account and mode may start (re-driving again is harmless).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from meterflow.ids import object_id
from meterflow.replay.rejections import RedriveCounts, RedriveFilter
from meterflow.store.pg import Conn

STALE_AFTER_MS = 30_000
MAX_LISTED_TOO_OLD = 100
INTERRUPTED = (
    "The process running this replay stopped before it finished. Start another replay with the "
    "same filters: events re-driven already count once."
)

Status = Literal["running", "succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class ReplayJob:
    id: str
    livemode: bool
    filters: dict[str, Any]
    status: Status
    progress: dict[str, int]
    outcomes: dict[str, int]
    rejected_codes: dict[str, int]
    too_old: list[str]
    failure_message: str | None
    created_ms: int
    finished_ms: int | None


class ReplayRunning(Exception):
    """A re-drive of this account and mode is running already."""


def _row(row: Any, now_ms: int) -> ReplayJob:
    status: Status = row["status"]
    failure = row["failure_message"]
    if status == "running" and row["heartbeat_ms"] < now_ms - STALE_AFTER_MS:
        status, failure = "failed", INTERRUPTED
    return ReplayJob(
        id=row["id"],
        livemode=row["livemode"],
        filters=orjson.loads(row["filters"]),
        status=status,
        progress=orjson.loads(row["progress"]),
        outcomes=orjson.loads(row["outcomes"]),
        rejected_codes=orjson.loads(row["rejected_codes"]),
        too_old=list(row["too_old"]),
        failure_message=failure,
        created_ms=row["created_ms"],
        finished_ms=row["finished_ms"],
    )


async def start_job(conn: Conn, selection: RedriveFilter, now_ms: int) -> ReplayJob:
    """Record a new running re-drive of the filter's account and mode; :class:`ReplayRunning`
    while another one (not stale) is running."""
    assert selection.account_id is not None  # noqa: S101 - the API sets both
    assert selection.livemode is not None  # noqa: S101
    async with conn.transaction():
        # Serialises starts per account and mode, so two requests cannot both see none running.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"replay:{selection.account_id}:{selection.livemode}",
        )
        running = await conn.fetchval(
            """SELECT id FROM rejected_replays WHERE account_id = $1 AND livemode = $2
               AND status = 'running' AND heartbeat_ms >= $3""",
            selection.account_id,
            selection.livemode,
            now_ms - STALE_AFTER_MS,
        )
        if running is not None:
            raise ReplayRunning(running)
        row = await conn.fetchrow(
            """INSERT INTO rejected_replays (id, account_id, livemode, filters, status,
                   created_ms, heartbeat_ms)
               VALUES ($1, $2, $3, $4::jsonb, 'running', $5, $5) RETURNING *""",
            object_id("mfrpl", livemode=selection.livemode),
            selection.account_id,
            selection.livemode,
            orjson.dumps(selection.as_document()).decode(),
            now_ms,
        )
    return _row(row, now_ms)


def _documents(counts: RedriveCounts) -> tuple[str, str, str, list[str]]:
    progress = {
        "records_read": counts.records_read,
        "records_total": counts.records_total,
        "rejections_matched": counts.matched,
    }
    return (
        orjson.dumps(progress).decode(),
        orjson.dumps(counts.outcome_counts()).decode(),
        orjson.dumps(dict(sorted(counts.rejected_codes.items()))).decode(),
        counts.too_old[:MAX_LISTED_TOO_OLD],
    )


async def record_progress(conn: Conn, job_id: str, counts: RedriveCounts, now_ms: int) -> None:
    await conn.execute(
        """UPDATE rejected_replays SET progress = $2::jsonb, outcomes = $3::jsonb,
               rejected_codes = $4::jsonb, too_old = $5, heartbeat_ms = $6
           WHERE id = $1""",
        job_id,
        *_documents(counts),
        now_ms,
    )


async def finish_job(
    conn: Conn, job_id: str, counts: RedriveCounts, now_ms: int, failure: str | None = None
) -> None:
    await conn.execute(
        """UPDATE rejected_replays SET progress = $2::jsonb, outcomes = $3::jsonb,
               rejected_codes = $4::jsonb, too_old = $5, heartbeat_ms = $6, finished_ms = $6,
               status = $7, failure_message = $8
           WHERE id = $1""",
        job_id,
        *_documents(counts),
        now_ms,
        "failed" if failure else "succeeded",
        failure,
    )


async def find_job(
    conn: Conn, job_id: str, account_id: str, livemode: bool, now_ms: int
) -> ReplayJob | None:
    row = await conn.fetchrow(
        "SELECT * FROM rejected_replays WHERE id = $1 AND account_id = $2 AND livemode = $3",
        job_id,
        account_id,
        livemode,
    )
    return None if row is None else _row(row, now_ms)
