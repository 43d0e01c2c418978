"""Where each import got to (``event_imports``): written after every chunk Kafka acknowledged,
read when an import starts again."""

from __future__ import annotations

from dataclasses import dataclass

from meterflow.store.pg import Conn


@dataclass(frozen=True, slots=True)
class Checkpoint:
    import_id: str
    account_id: str
    livemode: bool
    lines_done: int
    accepted: int
    rejected: int
    reject_file_bytes: int
    finished: bool


async def open_checkpoint(
    conn: Conn, import_id: str, *, account_id: str, livemode: bool, source: str, now_ms: int
) -> Checkpoint:
    """The import's checkpoint, created at line 0 when it is new."""
    await conn.execute(
        """INSERT INTO event_imports (import_id, account_id, livemode, source, created_ms,
               updated_ms)
           VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (import_id) DO NOTHING""",
        import_id,
        account_id,
        livemode,
        source,
        now_ms,
    )
    row = await conn.fetchrow("SELECT * FROM event_imports WHERE import_id = $1", import_id)
    assert row is not None  # noqa: S101 - inserted above
    return Checkpoint(
        import_id=row["import_id"],
        account_id=row["account_id"],
        livemode=row["livemode"],
        lines_done=row["lines_done"],
        accepted=row["accepted"],
        rejected=row["rejected"],
        reject_file_bytes=row["reject_file_bytes"],
        finished=row["finished"],
    )


async def save_checkpoint(conn: Conn, checkpoint: Checkpoint, now_ms: int) -> None:
    await conn.execute(
        """UPDATE event_imports SET lines_done = $2, accepted = $3, rejected = $4,
               reject_file_bytes = $5, finished = $6, updated_ms = $7
           WHERE import_id = $1""",
        checkpoint.import_id,
        checkpoint.lines_done,
        checkpoint.accepted,
        checkpoint.rejected,
        checkpoint.reject_file_bytes,
        checkpoint.finished,
        now_ms,
    )
