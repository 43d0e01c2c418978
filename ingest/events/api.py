"""Meter events and their adjustments, v1 and v2: validate synchronously, publish, then answer.

Every request is one record on the meter-events topic, answered only after Kafka acknowledged
it. The meter comes from a per-process cache; the duplicate check and the cancel lookup read the
aggregator's ``event_identifiers`` table, one indexed query each.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator

from ingest.edge.auth import Principal
from ingest.edge.errors import ApiError, ServiceUnavailable
from ingest.edge.http import Request, Response, json_response
from ingest.edge.metrics import MeterEventMetrics
from ingest.edge.params import Params
from ingest.edge.rate_limits import AccountLimiter
from ingest.edge.routing import Route
from ingest.events.identifiers import ProcessedEvents
from ingest.events.objects import (
    v1_cancel_adjustment,
    v1_meter_event,
    v2_cancel_adjustment,
    v2_meter_event,
)
from ingest.events.params import (
    CancelRequest,
    MeterEventRequest,
    accept_event,
    check_cancel,
    duplicate_event,
    parse_cancel,
    parse_meter_event_v1,
    parse_meter_event_v2,
)
from ingest.events.publisher import OutgoingRecord, RecordPublisher
from ingest.meters.directory import MeterDirectory
from meterflow.ids import object_id
from meterflow.records.meter_events import (
    AcceptedEvent,
    CancelRecord,
    EventsRecord,
    MeterEventsRecord,
    ReceiptClock,
    encode,
    partition_key,
)

V1_EVENTS = "/v1/billing/meter_events"
V2_EVENTS = "/v2/billing/meter_events"
V1_ADJUSTMENTS = "/v1/billing/meter_event_adjustments"
V2_ADJUSTMENTS = "/v2/billing/meter_event_adjustments"


def generated_identifier(idempotency_key: str | None) -> str:
    """An identifier for an event sent without one.

    Stripe's SDKs resend a failed POST with the same ``Idempotency-Key``; deriving the identifier
    from it makes such a retry a duplicate of the first attempt instead of a second event.
    """
    if idempotency_key:
        return "idk_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    return str(uuid.uuid4())


class MeterEventsApi:
    def __init__(
        self,
        *,
        meters: MeterDirectory,
        processed: ProcessedEvents,
        publisher: RecordPublisher,
        topic: str,
        metrics: MeterEventMetrics,
        limiter: AccountLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._meters = meters
        self._processed = processed
        self._publisher = publisher
        self._topic = topic
        self._metrics = metrics
        self._receipts = ReceiptClock(clock)
        self._limiter = limiter

    def routes(self) -> list[Route]:
        return [
            # Meter events count against their own limit, checked in _create; adjustments
            # against the general one.
            Route("POST", V1_EVENTS, self.create_v1, limit_class="meter_events"),
            Route("POST", V2_EVENTS, self.create_v2, limit_class="meter_events"),
            Route("POST", V1_ADJUSTMENTS, self.adjust_v1),
            Route("POST", V2_ADJUSTMENTS, self.adjust_v2),
        ]

    # -- meter events --------------------------------------------------------------------------

    async def create_v1(self, request: Request, who: Principal) -> Response:
        return await self._create(request, who, V1_EVENTS)

    async def create_v2(self, request: Request, who: Principal) -> Response:
        return await self._create(request, who, V2_EVENTS)

    async def _create(self, request: Request, who: Principal, endpoint: str) -> Response:
        v2 = endpoint == V2_EVENTS
        if self._limiter is not None:
            self._limiter.check(who.account_id, who.livemode)
        with self._counted(endpoint):
            if v2:
                event = parse_meter_event_v2(Params(request.json_params()))
            else:
                event = parse_meter_event_v1(Params(request.params()))
            accepted, received_ms = await self._record(event, who, request)
        render = v2_meter_event if v2 else v1_meter_event
        return json_response(
            render(
                event_name=accepted.event_name,
                identifier=accepted.identifier,
                livemode=who.livemode,
                payload=event.payload,
                timestamp_s=accepted.timestamp_s,
                received_ms=received_ms,
            )
        )

    async def _record(
        self, event: MeterEventRequest, who: Principal, request: Request
    ) -> tuple[AcceptedEvent, int]:
        received_ms, batch = self._receipts.stamp()
        identifier = event.identifier or generated_identifier(request.header("idempotency-key"))
        meter = await self._meters.meter_for(who, event.event_name)
        accepted = accept_event(event, meter, identifier=identifier, now_s=received_ms // 1000)
        # Only a client's own identifier gets the synchronous check. A generated one is either
        # random or derived from an Idempotency-Key, and an SDK retry under that key should get
        # 200 like the first attempt; the aggregator still counts it once.
        if event.identifier is not None and await self._processed.exists(who, identifier):
            raise duplicate_event(identifier)
        record = EventsRecord(
            account_id=who.account_id,
            livemode=who.livemode,
            received_ms=received_ms,
            batch=batch,
            events=(accepted,),
        )
        await self._publish(record, who, accepted.customer, identifier)
        return accepted, received_ms

    # -- adjustments ---------------------------------------------------------------------------

    async def adjust_v1(self, request: Request, who: Principal) -> Response:
        with self._counted(V1_ADJUSTMENTS):
            cancel = parse_cancel(Params(request.params()), expandable=True)
            await self._cancel(cancel, who)
        return json_response(
            v1_cancel_adjustment(
                event_name=cancel.event_name, identifier=cancel.identifier, livemode=who.livemode
            )
        )

    async def adjust_v2(self, request: Request, who: Principal) -> Response:
        with self._counted(V2_ADJUSTMENTS):
            cancel = parse_cancel(Params(request.json_params()), expandable=False)
            received_ms = await self._cancel(cancel, who)
        return json_response(
            v2_cancel_adjustment(
                adjustment_id=object_id("mtr_event_adj"),
                event_name=cancel.event_name,
                identifier=cancel.identifier,
                livemode=who.livemode,
                received_ms=received_ms,
            )
        )

    async def _cancel(self, cancel: CancelRequest, who: Principal) -> int:
        received_ms, batch = self._receipts.stamp()
        found = await self._processed.find(who, cancel.identifier)
        processed = check_cancel(cancel, found, now_ms=received_ms)
        record = CancelRecord(
            account_id=who.account_id,
            livemode=who.livemode,
            received_ms=received_ms,
            batch=batch,
            meter_id=processed.meter_id,
            event_name=cancel.event_name,
            identifier=cancel.identifier,
            customer=processed.customer,
        )
        await self._publish(record, who, processed.customer, cancel.identifier)
        return received_ms

    # -- shared --------------------------------------------------------------------------------

    async def _publish(
        self, record: MeterEventsRecord, who: Principal, customer: str, identifier: str
    ) -> None:
        key = partition_key(who.account_id, who.livemode, customer)
        try:
            await self._publisher.publish_many([OutgoingRecord(self._topic, key, encode(record))])
        except ServiceUnavailable as exc:
            # Name the identifier: when the server generated it, the client has no other way
            # to retry without risking a double count.
            raise ServiceUnavailable(
                f"{exc.message} Identifier: {identifier}", headers=exc.headers
            ) from exc

    @contextlib.contextmanager
    def _counted(self, endpoint: str) -> Iterator[None]:
        try:
            yield
        except ServiceUnavailable:
            self._metrics.count(endpoint, "unavailable")
            raise
        except ApiError as exc:
            # Every refusal here carries a code but a few parameter errors: those count as their
            # error type, which keeps the label's values a small fixed set.
            self._metrics.reject(endpoint, exc.code or exc.error_type)
            raise
        self._metrics.count(endpoint, "accepted")
