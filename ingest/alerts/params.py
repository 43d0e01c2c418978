"""Billing alert parameters: reading and validating them, without I/O.

``alert_type=credit_balance_threshold`` continues in :mod:`ingest.alerts.credit_params`; a usage
alert's create takes two shapes. The current one (API versions from ``2024-09-30.acacia``) nests
everything under ``usage_threshold`` with the customer in ``usage_threshold[filters][0]``; the
older one, which existing integrations still send, has ``usage_threshold_config`` and a top-level
``filter``. A request uses exactly one of them. Whether the meter exists and is active, and the
per-(meter, customer) limit, are checked by the store inside the create transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from ingest.alerts.credit_params import (
    CREDIT,
    MAX_CUSTOMER_ID,
    NewCreditBalanceAlert,
    parse_new_credit_alert,
)
from ingest.edge.errors import InvalidRequest
from ingest.edge.list_pages import PageRequest, page_request
from ingest.edge.params import Params, missing_param
from meterflow.alerts import ALERT_TYPES, RECURRENCES, Recurrence
from meterflow.rules.events import MAX_PAYLOAD_VALUE_LENGTH

MAX_TITLE = 256
MAX_METER_ID = 255
MAX_FILTERS = 1
GTE_MAX = 2**63 - 1  # the column is a bigint
# A customer id is whatever a meter event may carry as its customer: a payload value.
MAX_CUSTOMER = MAX_PAYLOAD_VALUE_LENGTH
CURRENT = "usage_threshold"
LEGACY = "usage_threshold_config"
LEGACY_FILTER = "filter"
_METER_PATHS = frozenset({f"{CURRENT}.meter", f"{LEGACY}.meter"})


@dataclass(frozen=True, slots=True)
class NewAlert:
    title: str
    meter_id: str
    gte: int
    recurrence: Recurrence
    customer: str | None  # None: every customer of the meter
    expand_meter: bool
    legacy_params: bool  # sent as usage_threshold_config + filter

    @property
    def meter_param(self) -> str:
        """The parameter that named the meter, for errors about it."""
        return f"{LEGACY if self.legacy_params else CURRENT}[meter]"


@dataclass(frozen=True, slots=True)
class AlertListQuery:
    page: PageRequest
    alert_type: str | None
    meter_id: str | None
    customer: str | None
    expand_meter: bool


def expands_meter(params: Params, *, prefix: str = "") -> bool:
    """Whether ``expand`` asks for the meter; any other path cannot be expanded (as for meters)."""
    wanted = False
    for path in params.string_list("expand"):
        if path.startswith(prefix) and path.removeprefix(prefix) in _METER_PATHS:
            wanted = True
            continue
        raise InvalidRequest(
            f"This property cannot be expanded ({path[:100]}).",
            code="parameter_invalid",
            param="expand",
        )
    return wanted


def parse_new_alert(values: Mapping[str, Any]) -> NewAlert | NewCreditBalanceAlert:
    """Validate create parameters of either alert type (and either usage alert shape)."""
    head = Params(values)
    alert_type = head.choice("alert_type", ALERT_TYPES, required=True)
    title = head.required_string("title", max_length=MAX_TITLE, printable=True)
    rest = {k: v for k, v in values.items() if k not in ("alert_type", "title")}
    if alert_type == "credit_balance_threshold":
        return parse_new_credit_alert(rest, title)
    return _parse_usage_alert(rest, title)


def _parse_usage_alert(values: dict[str, Any], title: str) -> NewAlert:
    if CREDIT in values:
        raise InvalidRequest(
            f"You cannot pass {CREDIT} with alert_type=usage_threshold; use "
            f"alert_type={CREDIT} for a credit balance alert.",
            code="parameter_invalid",
            param=CREDIT,
        )
    current = values.get(CURRENT)
    raw_filters: Any = None
    if isinstance(current, Mapping) and "filters" in current:
        # Params reads objects and strings, not arrays of objects: take the array out first.
        current = dict(current)
        raw_filters = current.pop("filters")
        values[CURRENT] = current
    params = Params(values)
    legacy = _which_shape(params)
    shape = LEGACY if legacy else CURRENT
    threshold = params.object(shape, required=True)
    assert threshold is not None  # noqa: S101 - required=True
    gte = _gte(threshold, values[shape])
    meter_id = threshold.required_string("meter", max_length=MAX_METER_ID, printable=True)
    recurrence = cast(Recurrence, threshold.choice("recurrence", RECURRENCES, required=True))
    customer = _legacy_customer(params) if legacy else _filters_customer(raw_filters)
    expand_meter = expands_meter(params)
    params.finish()
    return NewAlert(title, meter_id, gte, recurrence, customer, expand_meter, legacy)


def _which_shape(params: Params) -> bool:
    """True for the older shape; sending both shapes, or neither, is an error."""
    current = params.has(CURRENT)
    legacy = params.has(LEGACY) or params.has(LEGACY_FILTER)
    if current and legacy:
        other = LEGACY if params.has(LEGACY) else LEGACY_FILTER
        raise InvalidRequest(
            f"You cannot pass both {CURRENT} and {other}. {CURRENT} (with its filters) replaced "
            f"{LEGACY} and {LEGACY_FILTER} in API version 2024-09-30; use one shape only.",
            code="parameter_invalid",
            param=other,
        )
    if legacy and not params.has(LEGACY):
        raise missing_param(LEGACY)
    if not current and not legacy:
        raise missing_param(CURRENT)
    return legacy


def _gte(threshold: Params, raw: Mapping[str, Any]) -> int:
    """A whole number in plain decimal digits (or a JSON integer), 1 up to the bigint maximum."""
    name = threshold.name("gte")
    value = raw.get("gte")
    if value is None:
        raise missing_param(name)
    try:
        gte = threshold.integer("gte", minimum=1, maximum=GTE_MAX)
    except InvalidRequest as exc:
        shown = "an empty string" if value == "" else _excerpt(value)
        raise InvalidRequest(
            f"Invalid {name}: {shown} is not a whole number from 1 to {GTE_MAX} written in "
            "decimal digits.",
            code="parameter_invalid_integer",
            param=name,
        ) from exc
    assert gte is not None  # noqa: S101 - present, checked above
    return gte


def _excerpt(value: object) -> str:
    if isinstance(value, Mapping | list):
        return "an object" if isinstance(value, Mapping) else "an array"
    text = str(value)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _customer(params: Params) -> str:
    return params.required_string("customer", max_length=MAX_CUSTOMER, printable=True)


def _filters_customer(raw: Any) -> str | None:
    """The customer of ``usage_threshold[filters]`` (at most one filter, of type customer)."""
    name = f"{CURRENT}[filters]"
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(f, Mapping) for f in raw):
        raise InvalidRequest(
            f"Invalid {name}: must be an array of objects, such as "
            f"{name}[0][type]=customer with {name}[0][customer]=cus_….",
            code="parameter_invalid",
            param=name,
        )
    if len(raw) > MAX_FILTERS:
        raise InvalidRequest(
            f"Invalid {name}: you can specify at most {MAX_FILTERS} filter; got {len(raw)}.",
            code="parameter_invalid",
            param=name,
        )
    if not raw:
        return None
    entry = Params(raw[0], f"{name}[0]")
    entry.choice("type", ("customer",), required=True)
    customer = _customer(entry)
    entry.finish()
    return customer


def _legacy_customer(params: Params) -> str | None:
    """The customer of the older top-level ``filter``; meterflow has no subscriptions."""
    found = params.object(LEGACY_FILTER)
    if found is None:
        return None
    for key in ("subscription", "subscription_item"):
        if found.has(key):
            raise InvalidRequest(
                f"Invalid {found.name(key)}: meterflow has no subscriptions, so an alert can "
                f"only be limited to a customer ({found.name('customer')}).",
                code="parameter_invalid",
                param=found.name(key),
            )
    return _customer(found)


def parse_list_query(params: Params) -> AlertListQuery:
    """``alert_type``, ``meter``, ``customer``, the v1 pagination parameters and ``expand``."""
    page = page_request(params)
    alert_type = params.choice("alert_type", ALERT_TYPES)
    meter_id = params.string("meter", max_length=MAX_METER_ID)
    customer = params.string("customer", max_length=max(MAX_CUSTOMER, MAX_CUSTOMER_ID))
    expand_meter = expands_meter(params, prefix="data.")
    params.finish()
    return AlertListQuery(page, alert_type, meter_id, customer, expand_meter)
