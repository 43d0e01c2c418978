"""Billing alerts as Stripe shows them, and the ``billing.alert.triggered`` v1 event.

Shared by the alerts API (which renders alerts) and the alert evaluator (whose events embed the
alert). Two kinds exist: usage alerts (:class:`Alert`, ``usage_threshold``) and credit balance
alerts (:class:`CreditBalanceAlert`, ``credit_balance_threshold``); each renders the other's field
as ``null``. Two wire shapes exist: API versions from ``2024-09-30.acacia`` on show
``usage_threshold`` with ``filters``; older versions showed ``usage_threshold_config`` and a
top-level ``filter``. Events always carry the current shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

Recurrence = Literal["one_time", "daily", "monthly"]
AlertStatus = Literal["active", "inactive", "archived"]
AlertType = Literal["usage_threshold", "credit_balance_threshold"]
RECURRENCES: tuple[Recurrence, ...] = ("one_time", "daily", "monthly")
ALERT_TYPES: tuple[AlertType, ...] = ("usage_threshold", "credit_balance_threshold")

OBJECT = "billing.alert"
TRIGGERED_TYPE = "billing.alert.triggered"
# The first API version with ``usage_threshold``; a ``Stripe-Version`` before it gets the old shape.
CURRENT_SHAPE_SINCE = "2024-09-30"
# The version stamped on v1 events: the shape their ``data.object`` has.
EVENT_API_VERSION = "2024-09-30.acacia"

ALERT_COLUMNS = (
    "id, account_id, livemode, alert_type, title, meter_id, customer, gte, recurrence, status, "
    "created, lte_currency, lte_value"
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


@dataclass(frozen=True, slots=True)
class CreditBalanceAlert:
    """Fires when the customer's available credit balance in ``currency`` is at most ``lte``."""

    id: str
    account_id: str
    livemode: bool
    title: str
    customer: str
    currency: str  # ISO 4217, lower case
    lte: int  # minor units, >= 0
    status: AlertStatus
    created: int  # unix seconds

    @property
    def alert_type(self) -> AlertType:
        return "credit_balance_threshold"


AnyAlert = Alert | CreditBalanceAlert


def alert_from_row(row: Mapping[str, Any]) -> Alert:
    """A usage :class:`Alert` from a row selected with :data:`ALERT_COLUMNS`."""
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


def credit_alert_from_row(row: Mapping[str, Any]) -> CreditBalanceAlert:
    """A :class:`CreditBalanceAlert` from a row selected with :data:`ALERT_COLUMNS`."""
    return CreditBalanceAlert(
        id=row["id"],
        account_id=row["account_id"],
        livemode=row["livemode"],
        title=row["title"],
        customer=row["customer"],
        currency=row["lte_currency"],
        lte=int(row["lte_value"]),
        status=cast(AlertStatus, row["status"]),
        created=int(row["created"]),
    )


def any_alert_from_row(row: Mapping[str, Any]) -> AnyAlert:
    """Either kind of alert, from a row selected with :data:`ALERT_COLUMNS`."""
    if row["alert_type"] == "credit_balance_threshold":
        return credit_alert_from_row(row)
    return alert_from_row(row)


def uses_legacy_shape(stripe_version: str | None) -> bool:
    """Whether a request's ``Stripe-Version`` predates ``usage_threshold`` (no header: current)."""
    if not stripe_version:
        return False
    return stripe_version[: len(CURRENT_SHAPE_SINCE)] < CURRENT_SHAPE_SINCE


def alert_object(
    alert: AnyAlert, *, legacy: bool = False, meter: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``billing.alert`` object; ``meter`` is the expanded meter object when asked for."""
    body: dict[str, Any] = {
        "id": alert.id,
        "object": OBJECT,
        "alert_type": alert.alert_type,
        "livemode": alert.livemode,
        "status": alert.status,
        "title": alert.title,
    }
    if isinstance(alert, CreditBalanceAlert):
        return body | _credit_balance_fields(alert, legacy=legacy)
    meter_field: str | dict[str, Any] = alert.meter_id if meter is None else meter
    if legacy:
        body["filter"] = None if alert.customer is None else _legacy_filter(alert.customer)
        body["usage_threshold_config"] = {
            "gte": alert.gte,
            "meter": meter_field,
            "recurrence": alert.recurrence,
        }
    else:
        body["credit_balance_threshold"] = None
        body["usage_threshold"] = {
            "filters": None
            if alert.customer is None
            else [{"customer": alert.customer, "type": "customer"}],
            "gte": alert.gte,
            "meter": meter_field,
            "recurrence": alert.recurrence,
        }
    return body


def _legacy_filter(customer: str) -> dict[str, Any]:
    return {"customer": customer, "subscription": None, "subscription_item": None}


def _credit_balance_fields(alert: CreditBalanceAlert, *, legacy: bool) -> dict[str, Any]:
    """``credit_balance_threshold`` (only ``monetary`` balances), and the usage field as null.
    API versions before credit balance alerts never saw one; they get its customer in the old
    top-level ``filter`` as well."""
    fields: dict[str, Any] = {
        "credit_balance_threshold": {
            "filters": [{"customer": alert.customer, "type": "customer"}],
            "lte": {
                "balance_type": "monetary",
                "custom_pricing_unit": None,
                "monetary": {"currency": alert.currency, "value": alert.lte},
            },
        },
    }
    if legacy:
        fields["filter"] = _legacy_filter(alert.customer)
        fields["usage_threshold_config"] = None
    else:
        fields["usage_threshold"] = None
    return fields


def alert_triggered_event(
    *, event_id: str, alert: AnyAlert, customer: str, value: int, created: int
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
