"""Folding a rebuild's records into the shadow tables with the fold's own code.

:class:`ShadowFolder` remembers, per partition, the next offset it will fold, and
:meth:`ShadowFolder.fold_to` reads each partition up to a target offset (never beyond) and hands
every batch to :func:`~aggregator.rollups.store.apply_batch` on the shadow connection, where the
fold's statements write the shadow tables (see :mod:`aggregator.replay.shadow`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from aggregator.replay.compare import RecheckKey
from aggregator.replay.scope import RebuildScope, select_segments
from aggregator.rollups.columns import Segment
from aggregator.rollups.meter_windows import MeterWindows
from aggregator.rollups.series import EventSeries
from aggregator.rollups.store import apply_batch, ensure_event_partitions, event_days
from meterflow.kafka.offsets import spans_of
from meterflow.kafka.positions import read_ranges
from meterflow.records.meter_events import MeterEventsRecord, RecordDecodeError, decode
from meterflow.store.pg import Conn
from meterflow.windows import DAY_S

# The shadow's own offsets, in its own consumer_offsets table; the name only shows in it.
REBUILD_GROUP = "meterflow-rebuild"
BATCH_RECORDS = 5000
PROGRESS_INTERVAL_S = 2.0


@dataclass(slots=True)
class FoldCounts:
    records: int = 0
    undecodable: int = 0
    events_selected: int = 0
    events_new: int = 0
    cancels: int = 0


class ShadowFolder:
    def __init__(
        self,
        conn: Conn,
        consumer: AIOKafkaConsumer,
        topic: str,
        scope: RebuildScope,
        *,
        starts: Mapping[int, int],
        progress: Callable[[str], None],
    ) -> None:
        self._conn = conn
        self._consumer = consumer
        self._topic = topic
        self._scope = scope
        self.positions = dict(starts)
        self.starts = dict(starts)
        self.counts = FoldCounts()
        self._progress = progress
        self._windows = MeterWindows()
        self._series = EventSeries()
        self._known_days: set[int] = set()
        # While set, every (mode, meter, customer, day) a folded event touches, and every
        # (mode, meter, customer) a cancel touches (its event's day is not in the record).
        self.touched: set[RecheckKey] | None = None

    def gap(self, targets: Mapping[int, int]) -> int:
        """Records between where the shadow is and ``targets``."""
        return sum(max(0, t - self.positions.get(p, t)) for p, t in targets.items())

    async def fold_to(self, targets: Mapping[int, int], *, report: bool = False) -> None:
        """Fold every record from each partition's position up to its target (exclusive)."""
        ranges = {
            p: (self.positions[p], target)
            for p, target in targets.items()
            if p in self.positions and target > self.positions[p]
        }
        total = sum(stop - start for start, stop in ranges.values())
        started = shown = time.monotonic()
        done = 0
        selected_before = self.counts.events_selected
        async for batch in read_ranges(
            self._consumer, self._topic, ranges, max_records=BATCH_RECORDS
        ):
            await self._fold(batch)
            done += sum(len(records) for records in batch.values())
            now = time.monotonic()
            if report and now - shown >= PROGRESS_INTERVAL_S:
                shown = now
                selected = self.counts.events_selected - selected_before
                self._progress(_progress_line(done, total, selected, now - started))
        if report and total:
            selected = self.counts.events_selected - selected_before
            self._progress(_progress_line(done, total, selected, time.monotonic() - started))

    async def _fold(self, batch: Mapping[int, list[ConsumerRecord]]) -> None:
        records: list[MeterEventsRecord] = []
        offsets: dict[int, tuple[int, int]] = {}
        for partition, messages in batch.items():
            offsets[partition] = (messages[0].offset, messages[-1].offset)
            for message in messages:
                try:
                    records.append(decode(message.value))
                except RecordDecodeError:
                    self.counts.undecodable += 1  # skipped by the live fold too
        segments = select_segments(records, self._scope)
        if self.touched is not None:
            self.touched |= touched_keys(segments)
        days = event_days(segments) - self._known_days
        if days:
            await ensure_event_partitions(self._conn, days)
            self._known_days |= days
        outcome = await apply_batch(
            self._conn, group=REBUILD_GROUP, topic=self._topic, spans=spans_of(offsets),
            segments=segments, meter_windows=self._windows, series=self._series,
        )  # fmt: skip
        self.counts.records += len(records)
        self.counts.events_selected += sum(len(s.events) for s in segments)
        self.counts.events_new += outcome.events_new
        self.counts.cancels += outcome.cancels_applied
        for partition, (_first, last) in offsets.items():
            self.positions[partition] = last + 1


def touched_keys(segments: Iterable[Segment]) -> set[RecheckKey]:
    keys: set[RecheckKey] = set()
    for segment in segments:
        if segment.cancel is not None:
            c = segment.cancel
            keys.add((c.livemode, c.meter_id, c.customer, None))
            continue
        e = segment.events
        keys.update(
            (livemode, meter, customer, ts // DAY_S * DAY_S)
            for livemode, meter, customer, ts in zip(
                e.livemode, e.meter_id, e.customer, e.event_ts, strict=True
            )
        )
    return keys


def _progress_line(done: int, total: int, selected: int, elapsed_s: float) -> str:
    share = f" ({100 * done / total:.0f} %)" if total else ""
    rate = selected / elapsed_s if elapsed_s > 0 else 0.0
    return (
        f"rebuild: read {done:,} of {total:,} records{share}; {selected:,} events of the scope "
        f"folded into the shadow tables ({rate:,.0f} events/s)"
    )
