"""Re-driving rejected events: read the rejected-events topic, check each selected event again,
publish what passes to the meter-events topic and what fails back to the rejected one.

1. Note the topic's end offsets: the re-drive reads up to them, so what it publishes back is not
   read again in the same run. Start each partition at the first record of ``rejected_from_ms``.
2. For each batch of records: decide each selected rejection's outcome
   (:mod:`meterflow.replay.rejections`); look the accepted ones' identifiers up in the dedupe set
   (``event_identifiers``) and in ``redriven_identifiers``, in one query; publish the accepted
   ones as meter-events records (grouped by partition, as the stream does) and the failed ones
   as one rejected-events record per account and mode, and wait for Kafka's acknowledgement of
   all of them; then record the accepted identifiers in ``redriven_identifiers``.
3. Report progress after every batch.

A re-drive interrupted between publishing and recording publishes those events again next time;
the aggregator's dedupe (48 hours) drops them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence

from meterflow.kafka.partitions import PartitionMap
from meterflow.kafka.positions import (
    beginning_offsets,
    end_offsets,
    offsets_at,
    read_ranges,
    reading_consumer,
)
from meterflow.kafka.producer import KeyedValue, Producer, idempotent_producer, produce_all
from meterflow.kafka.security import PLAINTEXT
from meterflow.kafka.topics import (
    METER_EVENTS_PARTITIONS,
    meter_events_rejected_topic,
    meter_events_topic,
)
from meterflow.meters import Meter
from meterflow.records.meter_events import (
    AcceptedEvent,
    EventsRecord,
    ReceiptClock,
    RecordDecodeError,
    encode,
    partition_key,
)
from meterflow.records.rejected import (
    RejectedRecord,
    Rejection,
    decode_rejected,
    encode_rejected,
    rejected_key,
)
from meterflow.replay.rejections import (
    TOO_OLD_CODE,
    RedriveCounts,
    RedriveFilter,
    check_again,
    rejected_again,
)
from meterflow.rules.events import EventRuleFailure
from meterflow.settings.roles import KafkaSecuritySettings
from meterflow.store.meters import meters_by_event_name
from meterflow.store.pg import Conn
from meterflow.windows import DAY_S

BATCH_RECORDS = 500
MAX_EVENTS_PER_RECORD = 500
# The rejected topic keeps 40 days; a day more covers a re-drive that starts near the edge.
REDRIVEN_RETENTION_MS = 41 * DAY_S * 1000
PUBLISH_TIMEOUT_S = 30.0

Progress = Callable[[RedriveCounts], Awaitable[None]]
_Mode = tuple[str, bool]  # (account, livemode)


class Redrive:
    """One re-drive; :meth:`run` does it all (see the module docstring)."""

    def __init__(
        self,
        conn: Conn,
        bootstrap_servers: str,
        topic_prefix: str,
        selection: RedriveFilter,
        *,
        security: KafkaSecuritySettings = PLAINTEXT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self._bootstrap = bootstrap_servers
        self._rejected_topic = meter_events_rejected_topic(topic_prefix)
        self._events_topic = meter_events_topic(topic_prefix)
        self._filter = selection
        self._security = security
        self._clock = clock
        self._receipts = ReceiptClock(clock)
        self._partition_of = PartitionMap(METER_EVENTS_PARTITIONS)
        self._meters: dict[_Mode, dict[str, Meter]] = {}
        self._seen: set[tuple[str, bool, str]] = set()
        self.counts = RedriveCounts()

    async def run(self, progress: Progress) -> RedriveCounts:
        now_ms = int(self._clock() * 1000)
        await self._conn.execute(
            "DELETE FROM redriven_identifiers WHERE redriven_ms < $1",
            now_ms - REDRIVEN_RETENTION_MS,
        )
        consumer = reading_consumer(self._bootstrap, self._security)
        producer = idempotent_producer(
            self._bootstrap, "meterflow-replay", linger_ms=5, max_batch_bytes=256 * 1024,
            request_timeout_s=PUBLISH_TIMEOUT_S, security=self._security,
        )  # fmt: skip
        await consumer.start()
        try:
            await producer.start()
            ends = await end_offsets(consumer, self._rejected_topic)
            if self._filter.rejected_from_ms is None:
                starts = await beginning_offsets(consumer, self._rejected_topic)
            else:
                starts = await offsets_at(
                    consumer, self._rejected_topic, self._filter.rejected_from_ms
                )
            ranges = {p: (starts[p], ends[p]) for p in ends}
            self.counts.records_total = sum(max(0, e - s) for s, e in ranges.values())
            await progress(self.counts)
            async for batch in read_ranges(
                consumer, self._rejected_topic, ranges, max_records=BATCH_RECORDS
            ):
                records = [m.value for messages in batch.values() for m in messages]
                await self._redrive(records, producer)
                await progress(self.counts)
        finally:
            await consumer.stop()
            await producer.stop()
        return self.counts

    async def _redrive(self, raw_records: Sequence[bytes], producer: Producer) -> None:
        now_s = int(self._clock())
        accepted: list[tuple[_Mode, AcceptedEvent]] = []
        failed: dict[_Mode, list[Rejection]] = defaultdict(list)
        for raw in raw_records:
            self.counts.records_read += 1
            try:
                record = decode_rejected(raw)
            except RecordDecodeError:
                continue  # never written by meterflow; the error reports skip it too
            if not self._filter.takes_record(record):
                continue
            mode = (record.account_id, record.livemode)
            meters = await self._meters_of(mode)
            for rejection in record.rejections:
                if not self._filter.takes(rejection):
                    continue
                self.counts.matched += 1
                seen = (*mode, rejection.identifier)
                if seen in self._seen:
                    self.counts.outcomes["duplicate"] += 1
                    continue
                self._seen.add(seen)
                meter = meters.get(rejection.event_name)
                outcome = check_again(rejection, record.received_ms, meter, now_s=now_s)
                if isinstance(outcome, EventRuleFailure):
                    self._failed_again(rejection, outcome)
                    failed[mode].append(
                        rejected_again(rejection, record.received_ms, outcome, meter)
                    )
                else:
                    accepted.append((mode, outcome))
        counted = await self._already_counted(accepted)
        new = [
            (mode, event) for mode, event in accepted if (*mode, event.identifier) not in counted
        ]
        self.counts.outcomes["duplicate"] += len(accepted) - len(new)
        await self._publish(producer, new, failed)
        self.counts.outcomes["accepted"] += len(new)
        await self._record_redriven(new)

    def _failed_again(self, rejection: Rejection, failure: EventRuleFailure) -> None:
        if failure.async_code == TOO_OLD_CODE:
            self.counts.outcomes["too_old"] += 1
            self.counts.too_old.append(rejection.identifier)
        else:
            self.counts.outcomes["rejected"] += 1
            self.counts.rejected_codes[failure.async_code] += 1

    async def _meters_of(self, mode: _Mode) -> dict[str, Meter]:
        found = self._meters.get(mode)
        if found is None:
            found = self._meters[mode] = await meters_by_event_name(self._conn, *mode)
        return found

    async def _already_counted(
        self, accepted: Sequence[tuple[_Mode, AcceptedEvent]]
    ) -> set[tuple[str, bool, str]]:
        if not accepted:
            return set()
        columns = (
            [mode[0] for mode, _ in accepted],
            [mode[1] for mode, _ in accepted],
            [event.identifier for _, event in accepted],
        )
        rows = await self._conn.fetch(
            """WITH wanted AS (
                   SELECT * FROM unnest($1::text[], $2::bool[], $3::text[])
                       AS w(account_id, livemode, identifier))
               SELECT w.account_id, w.livemode, w.identifier FROM wanted w
               JOIN event_identifiers e
                 ON e.digest = event_digest(w.account_id, w.livemode, w.identifier)
               UNION
               SELECT account_id, livemode, identifier FROM redriven_identifiers
               JOIN wanted USING (account_id, livemode, identifier)""",
            *columns,
        )
        return {(r["account_id"], r["livemode"], r["identifier"]) for r in rows}

    async def _publish(
        self,
        producer: Producer,
        accepted: Sequence[tuple[_Mode, AcceptedEvent]],
        failed: dict[_Mode, list[Rejection]],
    ) -> None:
        records = list(self._event_records(accepted))
        if records:
            await produce_all(
                producer, self._events_topic, records, PUBLISH_TIMEOUT_S, self._partition_of
            )
        received_ms = int(self._clock() * 1000)
        rejected = [
            (
                rejected_key(account, livemode),
                encode_rejected(RejectedRecord(account, livemode, received_ms, tuple(group))),
            )
            for (account, livemode), group in failed.items()
        ]
        if rejected:
            await produce_all(producer, self._rejected_topic, rejected, PUBLISH_TIMEOUT_S)

    def _event_records(
        self, accepted: Iterable[tuple[_Mode, AcceptedEvent]]
    ) -> Iterable[KeyedValue]:
        """One record per (account, mode, partition), at most MAX_EVENTS_PER_RECORD events."""
        groups: dict[tuple[str, bool, int], list[tuple[bytes, AcceptedEvent]]] = defaultdict(list)
        for (account, livemode), event in accepted:
            key = partition_key(account, livemode, event.customer)
            groups[(account, livemode, self._partition_of(key))].append((key, event))
        for (account, livemode, _partition), group in groups.items():
            for first in range(0, len(group), MAX_EVENTS_PER_RECORD):
                part = group[first : first + MAX_EVENTS_PER_RECORD]
                received_ms, batch = self._receipts.stamp()
                events = tuple(event for _, event in part)
                record = EventsRecord(account, livemode, received_ms, batch, events)
                yield part[0][0], encode(record)

    async def _record_redriven(self, accepted: Sequence[tuple[_Mode, AcceptedEvent]]) -> None:
        if not accepted:
            return
        await self._conn.execute(
            """INSERT INTO redriven_identifiers (account_id, livemode, identifier, redriven_ms)
               SELECT *, $4 FROM unnest($1::text[], $2::bool[], $3::text[])
               ON CONFLICT DO NOTHING""",
            [mode[0] for mode, _ in accepted],
            [mode[1] for mode, _ in accepted],
            [event.identifier for _, event in accepted],
            int(self._clock() * 1000),
        )
