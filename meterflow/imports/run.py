"""``meterflow import FILE``: check every line, publish the events as meter-events records on the
path ingest uses, write the bad lines to a reject file, and keep a checkpoint to resume from.

1. Name the import: ``--import-id``, or a digest of the account, the mode and the file's bytes
   (the same file into the same account is the same import). Open its checkpoint
   (:mod:`meterflow.imports.checkpoints`); a finished import does nothing again.
2. Skip the lines up to the checkpoint and cut the reject file back to what it held then.
3. Read a chunk of lines; check each (:mod:`meterflow.imports.rows`) against the account's meters;
   group the good ones by the partition their customer maps to, at most 100 events a record
   (what a ``meter_event_stream`` request becomes); hand every record to the idempotent
   producer (``acks=all``).
4. While Kafka acknowledges that chunk, read and check the next one. Once every record of a
   chunk is acknowledged, append its bad lines to the reject file, sync it, and move the
   checkpoint past the chunk's last line.

An import killed at any point resumes at its checkpoint. Lines after it may have been published
already; they carry the same identifiers again (a line without one gets an identifier derived
from the import and the line number), so the aggregator's dedupe counts each once, as long as
the import is resumed within the dedupe set's 24 hours.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal

import asyncpg

from meterflow.errors import ConfigurationError
from meterflow.imports.checkpoints import Checkpoint, open_checkpoint, save_checkpoint
from meterflow.imports.rows import (
    ImportRefused,
    RowChecker,
    RowError,
    csv_layout,
    reject_line,
)
from meterflow.kafka.partitions import PartitionMap
from meterflow.kafka.producer import Producer, PublishFailed, idempotent_producer
from meterflow.kafka.topics import METER_EVENTS_PARTITIONS, meter_events_topic
from meterflow.meters import Meter
from meterflow.records.meter_events import (
    AcceptedEvent,
    EventsRecord,
    ReceiptClock,
    encode,
    partition_key,
)
from meterflow.settings import Settings
from meterflow.store.meters import meters_by_event_name

Format = Literal["csv", "jsonl"]
LINES_PER_CHUNK = 50_000
EVENTS_PER_RECORD = 100  # a stream request's worth
ACK_TIMEOUT_S = 60.0
PROGRESS_INTERVAL_S = 2.0
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, as some editors start a file with


@dataclass(frozen=True, slots=True)
class ImportRequest:
    source: str  # a path, or "-" for standard input
    account_id: str
    livemode: bool = False
    file_format: Format | None = None  # None: from the file name, else from the first byte
    reject_path: Path | None = None  # None: <file>.rejects.jsonl, or import-<id>.rejects.jsonl
    import_id: str | None = None


@dataclass(slots=True)
class ImportReport:
    import_id: str
    reject_path: Path
    resumed_at_line: int
    lines: int = 0  # lines read by this run (the header aside)
    accepted: int = 0
    rejected: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    total_accepted: int = 0
    total_rejected: int = 0
    already_finished: bool = False

    @property
    def events_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class _Chunk:
    last_line: int
    accepted: int
    rejects: list[bytes]
    codes: Counter[str]
    acks: list[asyncio.Future[Any]]


def import_id_for(request: ImportRequest, content: bytes | None) -> str:
    if request.import_id:
        return request.import_id
    if content is None:  # standard input: a new import each time unless named
        return "imp_" + os.urandom(12).hex()
    digest = hashlib.sha256(f"{request.account_id}:{request.livemode}:".encode())
    digest.update(content)
    return "imp_" + digest.hexdigest()[:24]


def _file_digest(path: Path) -> bytes:
    """The file's SHA-256 (read in blocks), standing for its content in the import's name."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def _format_of(request: ImportRequest, head: bytes) -> Format:
    if request.file_format is not None:
        return request.file_format
    if request.source.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if request.source.endswith(".csv"):
        return "csv"
    return "jsonl" if head.removeprefix(_BOM).lstrip()[:1] == b"{" else "csv"


class _Lines:
    """The input's lines after the header, each with its line number (CSV: the line the row
    ends on), as (number, checked event or error, source for the reject file)."""

    def __init__(self, stream: IO[bytes], file_format: Format, checker: RowChecker) -> None:
        self._format = file_format
        self._checker = checker
        if file_format == "csv":
            # utf-8-sig: a spreadsheet's byte order mark is not part of the first column's name.
            self._text = io.TextIOWrapper(
                stream, encoding="utf-8-sig", errors="surrogateescape", newline=""
            )
            self._reader = csv.reader(self._text)
            header = next(self._reader, None)
            if header is None:
                raise ImportRefused("the file is empty: a CSV import needs a header line")
            self._layout = csv_layout(header)
        self._stream = stream
        self.line = 1 if file_format == "csv" else 0

    def skip_to(self, line: int) -> None:
        """Read past every line up to ``line`` (a checkpoint: always the end of a row)."""
        if self._format == "csv":
            while self._reader.line_num < line and next(self._reader, None) is not None:
                pass
            self.line = max(self.line, self._reader.line_num)
            return
        while self.line < line and self._stream.readline():
            self.line += 1

    def chunk(self, size: int) -> Iterator[tuple[int, AcceptedEvent | RowError, Any]]:
        checker = self._checker
        if self._format == "csv":
            reader, layout = self._reader, self._layout
            for _ in range(size):
                row = next(reader, None)
                if row is None:
                    return
                self.line = reader.line_num
                yield self.line, checker.csv_row(row, layout, self.line), row
            return
        readline = self._stream.readline
        for _ in range(size):
            raw = readline()
            if not raw:
                return
            self.line += 1
            if self.line == 1:
                raw = raw.removeprefix(_BOM)
            if not raw.strip():
                continue  # a blank line (a trailing newline) holds no event
            yield self.line, checker.json_line(raw, self.line), raw


class Importer:
    """One run of one import; :meth:`run` does steps 1 to 4 of the module docstring."""

    def __init__(
        self, settings: Settings, request: ImportRequest, progress: Callable[[str], None]
    ) -> None:
        if not settings.database_url or not settings.kafka_bootstrap_servers:
            raise ConfigurationError("an import needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS")
        self._database_url = settings.database_url
        self._bootstrap = settings.kafka_bootstrap_servers
        self._security = settings.kafka
        self._topic = meter_events_topic(settings.topic_prefix)
        self._request = request
        self._progress = progress
        self._receipts = ReceiptClock()
        self._partition_map = PartitionMap(METER_EVENTS_PARTITIONS)
        self._partitions: dict[str, tuple[int, bytes]] = {}

    async def run(self) -> ImportReport:
        request = self._request
        stdin = request.source == "-"
        path = None if stdin else Path(request.source)
        import_id = import_id_for(request, None if path is None else _file_digest(path))
        reject_path = request.reject_path or (
            Path(f"import-{import_id}.rejects.jsonl")
            if path is None
            else path.with_name(path.name + ".rejects.jsonl")
        )
        conn = await asyncpg.connect(self._database_url)
        try:
            checkpoint = await open_checkpoint(
                conn, import_id, account_id=request.account_id, livemode=request.livemode,
                source="-" if path is None else str(path.resolve()), now_ms=_now_ms(),
            )  # fmt: skip
            if (checkpoint.account_id, checkpoint.livemode) != (
                request.account_id,
                request.livemode,
            ):
                raise ImportRefused(
                    f"import {import_id} belongs to account {checkpoint.account_id} "
                    f"({'live' if checkpoint.livemode else 'test'} mode)"
                )
            report = ImportReport(import_id, reject_path, checkpoint.lines_done)
            if checkpoint.finished:
                report.already_finished = True
                report.total_accepted, report.total_rejected = (
                    checkpoint.accepted,
                    checkpoint.rejected,
                )
                return report
            meters = await meters_by_event_name(conn, request.account_id, request.livemode)
            stream = sys.stdin.buffer if path is None else path.open("rb")
            try:
                await self._import(conn, stream, checkpoint, meters, report)
            finally:
                if path is not None:
                    stream.close()
        finally:
            await conn.close()
        return report

    async def _import(
        self,
        conn: asyncpg.Connection,
        stream: IO[bytes],
        checkpoint: Checkpoint,
        meters: Mapping[str, Meter],
        report: ImportReport,
    ) -> None:
        request = self._request
        head = stream.peek(64) if isinstance(stream, io.BufferedReader) else b""
        checker = RowChecker(report.import_id, meters, int(time.time()))
        lines = _Lines(stream, _format_of(request, head), checker)
        if checkpoint.lines_done:
            lines.skip_to(checkpoint.lines_done)
            self._progress(f"import {report.import_id}: resuming after line {lines.line:,}")
        rejects = _open_rejects(report.reject_path, checkpoint.reject_file_bytes)
        producer = idempotent_producer(
            self._bootstrap, "meterflow-import", linger_ms=5, max_batch_bytes=512 * 1024,
            request_timeout_s=ACK_TIMEOUT_S, security=self._security,
        )  # fmt: skip
        await producer.start()
        started = shown = time.monotonic()
        pending: _Chunk | None = None
        try:
            while True:
                checker.now_s = int(time.time())
                chunk = await self._send_chunk(producer, lines)
                if pending is not None:
                    checkpoint = await self._settle(conn, pending, checkpoint, rejects, report)
                if chunk is None:
                    break
                pending = chunk
                now = time.monotonic()
                if now - shown >= PROGRESS_INTERVAL_S:
                    shown = now
                    self._progress(_progress_line(report, now - started))
            checkpoint = replace(checkpoint, finished=True)
            await save_checkpoint(conn, checkpoint, _now_ms())
        finally:
            rejects.close()
            await producer.stop()
        report.seconds = time.monotonic() - started
        report.total_accepted, report.total_rejected = checkpoint.accepted, checkpoint.rejected

    async def _send_chunk(self, producer: Producer, lines: _Lines) -> _Chunk | None:
        groups: dict[int, list[AcceptedEvent]] = {}
        rejects: list[bytes] = []
        codes: Counter[str] = Counter()
        accepted = read = 0
        for _line, outcome, source in lines.chunk(LINES_PER_CHUNK):
            read += 1
            if isinstance(outcome, RowError):
                rejects.append(reject_line(outcome, _source_text(source)))
                codes[outcome.code] += 1
                continue
            accepted += 1
            found = self._partitions.get(outcome.customer)
            if found is None:
                key = partition_key(self._request.account_id, self._request.livemode,
                                    outcome.customer)  # fmt: skip
                found = self._partitions[outcome.customer] = (self._partition_map(key), key)
            group = groups.get(found[0])
            if group is None:
                group = groups[found[0]] = []
            group.append(outcome)
        if not read:
            return None
        acks: list[asyncio.Future[Any]] = []
        for partition, events in groups.items():
            for first in range(0, len(events), EVENTS_PER_RECORD):
                part = tuple(events[first : first + EVENTS_PER_RECORD])
                received_ms, batch = self._receipts.stamp()
                record = EventsRecord(
                    self._request.account_id, self._request.livemode, received_ms, batch, part
                )
                key = self._partitions[part[0].customer][1]
                acks.append(
                    await producer.send(self._topic, encode(record), key=key, partition=partition)
                )
        return _Chunk(lines.line, accepted, rejects, codes, acks)

    async def _settle(
        self,
        conn: asyncpg.Connection,
        chunk: _Chunk,
        checkpoint: Checkpoint,
        rejects: IO[bytes],
        report: ImportReport,
    ) -> Checkpoint:
        """Wait for every ack of ``chunk``, then write its rejects and move the checkpoint."""
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):
                await asyncio.gather(*chunk.acks)
        except Exception as exc:
            raise PublishFailed(
                f"Kafka did not acknowledge the lines after {checkpoint.lines_done:,}: {exc!r}; "
                "run the same import again to resume there"
            ) from exc
        if chunk.rejects:
            rejects.write(b"".join(chunk.rejects))
            rejects.flush()
            os.fsync(rejects.fileno())
        checkpoint = replace(
            checkpoint,
            lines_done=chunk.last_line,
            accepted=checkpoint.accepted + chunk.accepted,
            rejected=checkpoint.rejected + len(chunk.rejects),
            reject_file_bytes=rejects.tell(),
        )
        await save_checkpoint(conn, checkpoint, _now_ms())
        report.lines += chunk.accepted + len(chunk.rejects)
        report.accepted += chunk.accepted
        report.rejected += len(chunk.rejects)
        report.codes.update(chunk.codes)
        return checkpoint


def _source_text(source: Any) -> str | list[str]:
    if isinstance(source, bytes):
        return source.rstrip(b"\r\n").decode("utf-8", "replace")
    return list(source)


def _open_rejects(path: Path, keep_bytes: int) -> IO[bytes]:
    """The reject file, cut back to the ``keep_bytes`` the checkpoint counts, for appending."""
    rejects = path.open("r+b" if path.exists() else "w+b")
    rejects.truncate(min(keep_bytes, rejects.seek(0, os.SEEK_END)))
    rejects.seek(0, os.SEEK_END)
    return rejects


def _progress_line(report: ImportReport, elapsed_s: float) -> str:
    rate = report.accepted / elapsed_s if elapsed_s > 0 else 0.0
    return (
        f"import {report.import_id}: {report.lines:,} lines done, {report.accepted:,} events "
        f"published, {report.rejected:,} rejected ({rate:,.0f} events/s)"
    )


def _now_ms() -> int:
    return int(time.time() * 1000)
