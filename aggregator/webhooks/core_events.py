"""v2 core events (Stripe's thin events): created once, stored for ``GET /v2/core/events``, and
announced to the account's webhook endpoints in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from meterflow.apikeys import random_token
from meterflow.core_events import event_envelope
from meterflow.store.notifications import OutgoingEvent, enqueue_deliveries
from meterflow.store.pg import Conn

_ID_LENGTH = 46


@dataclass(frozen=True, slots=True)
class CoreEvent:
    id: str
    account_id: str
    livemode: bool
    type: str
    created_ms: int
    related_object: dict[str, str] | None
    data: dict[str, Any]
    # What produced the event: creating another event with the same key does nothing.
    source_key: str


def new_event_id(livemode: bool) -> str:
    """``evt_test_…`` or ``evt_live_…``, as Stripe names v2 events."""
    return f"evt_{'live' if livemode else 'test'}_{random_token(_ID_LENGTH)}"


def thin_notification(event: CoreEvent) -> dict[str, Any]:
    """The notification delivered to webhook endpoints; the receiver fetches ``data`` by id."""
    return event_envelope(
        event_id=event.id,
        event_type=event.type,
        created_ms=event.created_ms,
        livemode=event.livemode,
        related_object=event.related_object,
    )


def outgoing(event: CoreEvent) -> OutgoingEvent:
    return OutgoingEvent(
        account_id=event.account_id,
        livemode=event.livemode,
        event_id=event.id,
        event_type=event.type,
        body=orjson.dumps(thin_notification(event)).decode(),
    )


def _json_or_none(value: dict[str, str] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


async def insert_core_events(conn: Conn, events: Sequence[CoreEvent]) -> list[CoreEvent]:
    """Store the events whose source key is new, queue their webhook deliveries, and return them.

    Run it inside a transaction together with whatever marks the events' source as reported.
    """
    if not events:
        return []
    inserted = await conn.fetch(
        """INSERT INTO core_events (id, account_id, livemode, type, created_ms, related_object_id,
                                    related_object, data, source_key)
           SELECT id, account_id, livemode, type, created_ms, related_object_id,
                  related_object::json, data::json, source_key
           FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::bigint[], $6::text[],
                       $7::text[], $8::text[], $9::text[])
                AS e(id, account_id, livemode, type, created_ms, related_object_id,
                     related_object, data, source_key)
           ON CONFLICT (account_id, livemode, source_key) DO NOTHING
           RETURNING id""",
        [e.id for e in events],
        [e.account_id for e in events],
        [e.livemode for e in events],
        [e.type for e in events],
        [e.created_ms for e in events],
        [None if e.related_object is None else e.related_object["id"] for e in events],
        [_json_or_none(e.related_object) for e in events],
        [orjson.dumps(e.data).decode() for e in events],
        [e.source_key for e in events],
    )
    new_ids = {r["id"] for r in inserted}
    created = [e for e in events if e.id in new_ids]
    if created:
        await enqueue_deliveries(
            conn, [outgoing(e) for e in created], now_ms=max(e.created_ms for e in created)
        )
    return created
