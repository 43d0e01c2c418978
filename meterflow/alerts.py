"""Billing alerts as Stripe shows them, and the ``billing.alert.triggered`` v1 event.

Shared by the alerts API (which renders alerts) and the alert evaluator (whose events embed the
alert). Two wire shapes exist: API versions from ``2024-09-30.acacia`` on show
``usage_threshold`` with ``filters``; older versions showed ``usage_threshold_config`` and a
top-level ``filter``. Events always carry the current shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

Recurrence = Literal["one_time", "daily", "monthly"]
AlertStatus = Literal["active", "inactive", "archived"]
RECURRENCES: tuple[Recurrence, ...] = ("one_time", "daily", "monthly")

OBJECT = "billing.alert"
TRIGGERED_TYPE = "billing.alert.triggered"
# The first API version with ``usage_threshold``; a ``Stripe-Version`` before it gets the old shape.
CURRENT_SHAPE_SINCE = "2024-09-30"
# The version stamped on v1 events: the shape their ``data.object`` has.
EVENT_API_VERSION = "2024-09-30.acacia"

ALERT_COLUMNS = (
    "id, account_id, livemode, alert_type, title, meter_id, customer, gte, recurrence, status, "
    "created"
)


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    account_id: str
    livemode: bool
    alert_type: str
    title: str
    meter_id: str
    customer: str | None  # None: the alert watches every customer of the meter
    gte: int
    recurrence: Recurrence
    status: AlertStatus
    created: int  # unix seconds


def alert_from_row(row: Mapping[str, Any]) -> Alert:
    """An :class:`Alert` from a row selected with :data:`ALERT_COLUMNS`."""
    return Alert(
        id=row["id"],
        account_id=row["account_id"],
        livemode=row["livemode"],
        alert_type=row["alert_type"],
        title=row["title"],
        meter_id=row["meter_id"],
        customer=row["customer"],
        gte=int(row["gte"]),
        recurrence=cast(Recurrence, row["recurrence"]),
        status=cast(AlertStatus, row["status"]),
        created=int(row["created"]),
    )


def uses_legacy_shape(stripe_version: str | None) -> bool:
    """Whether a request's ``Stripe-Version`` predates ``usage_threshold`` (no header: current)."""
    if not stripe_version:
        return False
    return stripe_version[: len(CURRENT_SHAPE_SINCE)] < CURRENT_SHAPE_SINCE


def alert_object(
    alert: Alert, *, legacy: bool = False, meter: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``billing.alert`` object; ``meter`` is the expanded meter object when asked for."""
    meter_field: str | dict[str, Any] = alert.meter_id if meter is None else meter
    body: dict[str, Any] = {
        "id": alert.id,
        "object": OBJECT,
        "alert_type": alert.alert_type,
        "livemode": alert.livemode,
        "status": alert.status,
        "title": alert.title,
    }
    if legacy:
        body["filter"] = (
            None
            if alert.customer is None
            else {"customer": alert.customer, "subscription": None, "subscription_item": None}
        )
        body["usage_threshold_config"] = {
            "gte": alert.gte,
            "meter": meter_field,
            "recurrence": alert.recurrence,
        }
    else:
        body["usage_threshold"] = {
            "filters": None
            if alert.customer is None
            else [{"customer": alert.customer, "type": "customer"}],
            "gte": alert.gte,
            "meter": meter_field,
            "recurrence": alert.recurrence,
        }
    return body


def alert_triggered_event(
    *, event_id: str, alert: Alert, customer: str, value: int, created: int
) -> dict[str, Any]:
    """The v1 ``billing.alert.triggered`` event for one firing, as stored, listed and delivered.

    ``pending_webhooks`` is 0 here; readers that know the delivery state fill in the live count.
    """
    return {
        "id": event_id,
        "object": "event",
        "api_version": EVENT_API_VERSION,
        "created": created,
        "data": {
            "object": {
                "object": "billing.alert_triggered",
                "alert": alert_object(alert),
                "created": created,
                "customer": customer,
                "livemode": alert.livemode,
                "value": value,
            }
        },
        "livemode": alert.livemode,
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "type": TRIGGERED_TYPE,
    }
