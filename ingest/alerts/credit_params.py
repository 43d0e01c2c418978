"""Credit balance alert parameters (``alert_type=credit_balance_threshold``), without I/O.

``credit_balance_threshold[lte]`` holds the balance type (only ``monetary``; Stripe's
``custom_pricing_unit`` is refused, as meterflow has no custom pricing units) and
``monetary[currency]`` with ``monetary[value]`` in minor units. The ``filters`` must name exactly
one customer, as Stripe requires "at this time". Whether that customer exists is checked by the
store inside the create transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ingest.billing.prices.params import parse_currency
from ingest.edge.errors import InvalidRequest
from ingest.edge.params import Params, missing_param

CREDIT = "credit_balance_threshold"
# Parameters of the usage alert shape, refused beside alert_type=credit_balance_threshold.
USAGE_PARAMS = ("usage_threshold", "usage_threshold_config", "filter")
LTE_MAX = 2**63 - 1  # the column is a bigint
MAX_CUSTOMER_ID = 255  # billing objects' ids (customers are cus_…)
CUSTOMER_PARAM = f"{CREDIT}[filters][0][customer]"


@dataclass(frozen=True, slots=True)
class NewCreditBalanceAlert:
    title: str
    customer: str
    currency: str
    lte: int  # minor units


def parse_new_credit_alert(values: Mapping[str, Any], title: str) -> NewCreditBalanceAlert:
    """Validate what follows ``alert_type=credit_balance_threshold``; ``values`` holds every
    parameter but ``alert_type`` and ``title`` (read already)."""
    values = dict(values)
    for usage in USAGE_PARAMS:
        if usage in values:
            raise InvalidRequest(
                f"You cannot pass {usage} with alert_type=credit_balance_threshold. A credit "
                f"balance alert is configured by {CREDIT}[lte] and {CREDIT}[filters].",
                code="parameter_invalid",
                param=usage,
            )
    threshold = values.get(CREDIT)
    raw_filters: Any = None
    if isinstance(threshold, Mapping) and "filters" in threshold:
        # Params reads objects and strings, not arrays of objects: take the array out first.
        threshold = dict(threshold)
        raw_filters = threshold.pop("filters")
        values[CREDIT] = threshold
    params = Params(values)
    config = params.object(CREDIT, required=True)
    assert config is not None  # noqa: S101 - required=True
    customer = _filters_customer(raw_filters)
    currency, lte = _lte(config)
    params.no_expansion()
    params.finish()
    return NewCreditBalanceAlert(title, customer, currency, lte)


def _lte(config: Params) -> tuple[str, int]:
    lte = config.object("lte", required=True)
    assert lte is not None  # noqa: S101 - required=True
    balance_type = lte.required_string("balance_type")
    if balance_type != "monetary":
        name = lte.name("balance_type")
        raise InvalidRequest(
            f"Invalid {name}: meterflow's credit balance alerts support only monetary "
            "balances (billing credits in a currency); custom_pricing_unit is not available.",
            code="parameter_invalid",
            param=name,
        )
    monetary = lte.object("monetary", required=True)
    assert monetary is not None  # noqa: S101 - required=True
    currency = parse_currency(monetary, "currency")
    value = _value(monetary)
    return currency, value


def _value(monetary: Params) -> int:
    """A whole number of minor units, 0 up to the bigint maximum."""
    name = monetary.name("value")
    if not monetary.has("value"):
        raise missing_param(name)
    try:
        value = monetary.integer("value", minimum=0, maximum=LTE_MAX)
    except InvalidRequest as exc:
        raise InvalidRequest(
            f"Invalid {name}: must be a whole number of the currency's minor unit (cents for "
            f"usd) from 0 to {LTE_MAX}.",
            code="parameter_invalid_integer",
            param=name,
        ) from exc
    if value is None:  # an explicit JSON null
        raise missing_param(name)
    return value


def _filters_customer(raw: Any) -> str:
    """The one customer of ``credit_balance_threshold[filters]``."""
    name = f"{CREDIT}[filters]"
    if raw is None:
        raise InvalidRequest(
            f"Missing required param: {name}. A credit balance alert watches one customer: "
            f"{name}[0][type]=customer with {name}[0][customer]=cus_….",
            code="parameter_missing",
            param=name,
        )
    if not isinstance(raw, list) or not all(isinstance(f, Mapping) for f in raw) or len(raw) != 1:
        raise InvalidRequest(
            f"Invalid {name}: must be an array of exactly one filter, "
            f"{name}[0][type]=customer with {name}[0][customer]=cus_….",
            code="parameter_invalid",
            param=name,
        )
    entry = Params(raw[0], f"{name}[0]")
    entry.choice("type", ("customer",), required=True)
    customer = entry.required_string("customer", max_length=MAX_CUSTOMER_ID, printable=True)
    entry.finish()
    return customer
