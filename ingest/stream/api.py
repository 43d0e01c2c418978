"""The high-throughput path: ``meter_event_session`` and ``meter_event_stream`` (v2).

A stream request is answered ``200 {}`` once every one of its events is in Kafka: the valid ones
as meter-events records, the invalid ones as a rejected-events record that error reports are
built from. Valid events are grouped by the partition their customer key maps to, one record per
group, so a request of 100 events costs a handful of Kafka records rather than 100, while each
customer's events still land in the partition its single events and cancels use.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from ingest.edge.auth import Principal
from ingest.edge.http import Request, Response, json_response
from ingest.edge.params import Params
from ingest.edge.rate_limits import AccountLimiter
from ingest.edge.routing import Route
from ingest.events.publisher import OutgoingRecord, RecordPublisher
from ingest.meters.directory import MeterDirectory
from ingest.stream.events import check_stream_event, parse_stream_body
from ingest.stream.sessions import SessionAuthority
from meterflow.kafka.partitions import PartitionMap
from meterflow.kafka.topics import METER_EVENTS_PARTITIONS
from meterflow.meters import Meter
from meterflow.records.meter_events import (
    AcceptedEvent,
    EventsRecord,
    ReceiptClock,
    encode,
    partition_key,
)
from meterflow.records.rejected import RejectedRecord, Rejection, encode_rejected, rejected_key
from meterflow.rules.events import format_rfc3339

SESSION = "/v2/billing/meter_event_session"
SESSION_REVOKE = "/v2/billing/meter_event_session/revoke"
STREAM = "/v2/billing/meter_event_stream"


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "meterflow_stream_events_total",
            "Events received through meter_event_stream, by outcome (accepted, or the "
            "asynchronous error code they were rejected with).",
            ["outcome"],
            registry=registry,
        )
        self.batch_events = Histogram(
            "meterflow_stream_request_events",
            "Events per accepted meter_event_stream request.",
            buckets=(1, 5, 10, 25, 50, 75, 100),
            registry=registry,
        )
        self.sessions = Counter(
            "meterflow_stream_sessions_total",
            "Meter event sessions created.",
            registry=registry,
        )


class MeterEventStreamApi:
    def __init__(
        self,
        *,
        sessions: SessionAuthority,
        meters: MeterDirectory,
        publisher: RecordPublisher,
        events_topic: str,
        rejected_topic: str,
        limiter: AccountLimiter,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self._meters = meters
        self._publisher = publisher
        self._events_topic = events_topic
        self._rejected_topic = rejected_topic
        self._limiter = limiter
        self._metrics = StreamMetrics(registry)
        self._receipts = ReceiptClock(clock)
        self._clock = clock
        self._partition_of = PartitionMap(METER_EVENTS_PARTITIONS)

    def routes(self) -> list[Route]:
        return [
            Route("POST", SESSION, self.create_session),
            Route("POST", SESSION_REVOKE, self.revoke_sessions),
            # Authenticated by session token; counts events against its own limit, in stream().
            Route("POST", STREAM, self.stream, authenticated=False, limit_class="stream"),
        ]

    async def create_session(self, request: Request, who: Principal) -> Response:
        Params(request.json_params()).finish()
        claims, token = self._sessions.issue(who)
        self._metrics.sessions.inc()
        return json_response(
            {
                "id": claims.session_id,
                "object": "v2.billing.meter_event_session",
                "authentication_token": token,
                "created": format_rfc3339(claims.created_ms),
                "expires_at": format_rfc3339(claims.expires_ms),
                "livemode": who.livemode,
            }
        )

    async def revoke_sessions(self, request: Request, who: Principal) -> Response:
        Params(request.json_params()).finish()
        revoked_ms = await self._sessions.revoke(who)
        return json_response(
            {
                "object": "v2.billing.meter_event_session_revocation",
                "revoked_before": format_rfc3339(revoked_ms),
                "livemode": who.livemode,
            }
        )

    async def stream(self, request: Request) -> Response:
        who = await self._sessions.authenticate(request.header("authorization"))
        events = parse_stream_body(request.json_params(), request.header("idempotency-key"))
        self._limiter.check(who.account_id, who.livemode, len(events))
        now_s = int(self._clock())
        meters: dict[str, Meter | None] = {}
        accepted: list[AcceptedEvent] = []
        rejections: list[Rejection] = []
        for event in events:
            if event.event_name not in meters:
                meters[event.event_name] = await self._meters.meter_for(who, event.event_name)
            outcome = check_stream_event(event, meters[event.event_name], now_s=now_s)
            if isinstance(outcome, Rejection):
                rejections.append(outcome)
            else:
                accepted.append(outcome)
        await self._publisher.publish_many(self._records(who, accepted, rejections))
        self._metrics.batch_events.observe(len(events))
        if accepted:
            self._metrics.events.labels("accepted").inc(len(accepted))
        for rejection in rejections:
            self._metrics.events.labels(rejection.code).inc()
        return json_response({})

    def _records(
        self, who: Principal, accepted: list[AcceptedEvent], rejections: list[Rejection]
    ) -> list[OutgoingRecord]:
        groups: dict[int, list[tuple[bytes, AcceptedEvent]]] = defaultdict(list)
        for event in accepted:
            key = partition_key(who.account_id, who.livemode, event.customer)
            groups[self._partition_of(key)].append((key, event))
        records: list[OutgoingRecord] = []
        for partition, group in groups.items():
            received_ms, batch = self._receipts.stamp()
            record = EventsRecord(
                account_id=who.account_id,
                livemode=who.livemode,
                received_ms=received_ms,
                batch=batch,
                events=tuple(event for _, event in group),
            )
            # Every key of the group maps to the same partition; the first one routes the record.
            records.append(
                OutgoingRecord(self._events_topic, group[0][0], encode(record), partition)
            )
        if rejections:
            rejected = RejectedRecord(
                account_id=who.account_id,
                livemode=who.livemode,
                received_ms=int(self._clock() * 1000),
                rejections=tuple(rejections),
            )
            records.append(
                OutgoingRecord(
                    self._rejected_topic,
                    rejected_key(who.account_id, who.livemode),
                    encode_rejected(rejected),
                )
            )
        return records
