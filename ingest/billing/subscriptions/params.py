"""Subscription parameters, checked without I/O; the prices and the customer are checked by the
API once loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ingest.edge.errors import InvalidRequest
from ingest.edge.object_params import (
    MetadataChange,
    parse_metadata,
    parse_metadata_change,
    take_boolean,
)
from ingest.edge.params import Params, missing_param
from meterflow.billing.objects.subscriptions import Thresholds

MAX_ITEMS = 20
MAX_QUANTITY = 2**31 - 1


@dataclass(frozen=True, slots=True)
class NewItem:
    price: str
    quantity: int | None
    metadata: dict[str, str]
    param: str  # e.g. items[0], for errors about this item


@dataclass(frozen=True, slots=True)
class NewSubscription:
    customer: str
    items: list[NewItem]
    billing_cycle_anchor: int | None
    backdate_start_date: int | None
    thresholds: Thresholds | None
    cancel_at_period_end: bool
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class ItemChange:
    """``items[n]`` on update: a new item (no ``id``), a removal, or a new quantity."""

    id: str | None
    price: str | None
    quantity: int | None
    deleted: bool
    param: str


@dataclass(frozen=True, slots=True)
class SubscriptionChanges:
    items: list[ItemChange] = field(default_factory=list)
    cancel_at_period_end: bool | None = None
    metadata: MetadataChange = field(default_factory=MetadataChange)


def _indexed(raw: object, name: str) -> list[dict[str, Any]]:
    """A list parameter, given as a JSON list or a form's indexed map (``items[0][price]``)."""
    if isinstance(raw, dict) and all(isinstance(k, str) and k.isdigit() for k in raw):
        raw = [raw[k] for k in sorted(raw, key=int)]
    if not isinstance(raw, list) or not all(isinstance(v, dict) for v in raw):
        raise InvalidRequest(
            f"Invalid {name}: must be a list of objects.", code="parameter_invalid", param=name
        )
    if len(raw) > MAX_ITEMS:
        raise InvalidRequest(
            f"Invalid {name}: at most {MAX_ITEMS} items are allowed.",
            code="parameter_invalid",
            param=name,
        )
    return [dict(v) for v in raw]


def _thresholds(params: Params) -> Thresholds | None:
    values = params.raw("billing_thresholds")
    if values is None or values == "":
        return None
    if not isinstance(values, dict):
        raise InvalidRequest(
            "Invalid billing_thresholds: must be an object (hash).",
            code="parameter_invalid",
            param="billing_thresholds",
        )
    values = dict(values)
    reset = take_boolean(values, "reset_billing_cycle_anchor")
    child = Params(values, "billing_thresholds")
    amount = child.integer("amount_gte", minimum=1, maximum=99_999_999)
    if amount is None:
        raise missing_param("billing_thresholds[amount_gte]")
    child.finish()
    return Thresholds(amount, bool(reset))


def parse_new_subscription(values: dict[str, Any]) -> NewSubscription:
    cancel = take_boolean(values, "cancel_at_period_end")
    params = Params(values)
    customer = params.required_string("customer", max_length=255)
    raw_items = params.raw("items")
    if raw_items is None:
        raise missing_param("items")
    items: list[NewItem] = []
    for index, entry in enumerate(_indexed(raw_items, "items")):
        child = Params(entry, f"items[{index}]")
        items.append(
            NewItem(
                price=child.required_string("price", max_length=255),
                quantity=child.integer("quantity", minimum=0, maximum=MAX_QUANTITY),
                metadata=parse_metadata(child) or {},
                param=f"items[{index}]",
            )
        )
        child.finish()
    if not items:
        raise missing_param("items")
    subscription = NewSubscription(
        customer=customer,
        items=items,
        billing_cycle_anchor=params.integer("billing_cycle_anchor", minimum=0),
        backdate_start_date=params.integer("backdate_start_date", minimum=0),
        thresholds=_thresholds(params),
        cancel_at_period_end=bool(cancel),
        metadata=parse_metadata(params) or {},
    )
    params.no_expansion()
    params.finish()
    return subscription


def parse_subscription_changes(values: dict[str, Any]) -> SubscriptionChanges:
    cancel = take_boolean(values, "cancel_at_period_end")
    params = Params(values)
    changes: list[ItemChange] = []
    raw_items = params.raw("items")
    if raw_items is not None:
        for index, entry in enumerate(_indexed(raw_items, "items")):
            deleted = take_boolean(entry, "deleted")
            child = Params(entry, f"items[{index}]")
            change = ItemChange(
                id=child.string("id", max_length=255),
                price=child.string("price", max_length=255),
                quantity=child.integer("quantity", minimum=0, maximum=MAX_QUANTITY),
                deleted=bool(deleted),
                param=f"items[{index}]",
            )
            child.finish()
            if change.id is None and change.price is None:
                raise missing_param(f"items[{index}][price]")
            changes.append(change)
    result = SubscriptionChanges(
        items=changes, cancel_at_period_end=cancel, metadata=parse_metadata_change(params)
    )
    params.no_expansion()
    params.finish()
    return result
