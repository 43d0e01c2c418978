"""The billing routes' descriptions: customers, products, prices, subscriptions, invoices and
credits."""

from __future__ import annotations

from ingest.openapi.operation import CREATED, METADATA, NO_PARAMS, Operation, ids, page_query
from ingest.openapi.shapes import BOOLEAN, INTEGER, STRING, array, enum, params, text

_CUSTOMER = {
    "name": text(256),
    "email": text(512),
    "description": text(350),
    "metadata": METADATA,
}
_PRODUCT = {
    "name": text(250, min_length=1),
    "active": BOOLEAN,
    "description": text(40000),
    "metadata": METADATA,
}
_CURRENCY = text(3, min_length=3)
_RECURRING = params(
    {
        "interval": enum("day", "month", "week", "year"),
        "interval_count": {**INTEGER, "minimum": 1},
        "usage_type": enum("licensed", "metered"),
        "meter": text(255),
    },
    required=("interval",),
)
_PRICE_CHANGES = {
    "active": BOOLEAN,
    "nickname": text(250),
    "lookup_key": text(200),
    "metadata": METADATA,
}
_NEW_PRICE = params(
    {
        **_PRICE_CHANGES,
        "currency": _CURRENCY,
        "product": text(255),
        "product_data": params({"name": text(250, min_length=1)}, required=("name",)),
        "unit_amount": {**INTEGER, "minimum": 0},
        "unit_amount_decimal": text(40),
        "billing_scheme": enum("per_unit", "tiered"),
        "tiers_mode": enum("graduated", "volume"),
        "recurring": _RECURRING,
        "transform_quantity": params(
            {"divide_by": {**INTEGER, "minimum": 1}, "round": enum("down", "up")},
            required=("divide_by", "round"),
        ),
    },
    required=("currency",),
)
_ITEM = params(
    {"price": text(255, min_length=1), "quantity": {**INTEGER, "minimum": 0}, "metadata": METADATA}
)
_SUBSCRIPTION_CHANGES = {
    "cancel_at_period_end": BOOLEAN,
    "metadata": METADATA,
}
_MONETARY = params(
    {
        "type": enum("monetary"),
        "monetary": params(
            {"currency": text(3, min_length=3), "value": {**INTEGER, "minimum": 1}},
            required=("currency", "value"),
        ),
    },
    required=("type", "monetary"),
)
_SCOPE = params(
    {"scope": params({"price_type": enum("metered"), "prices": array(params({"id": STRING}))})},
    required=("scope",),
)
_GRANT_CHANGES = {"expires_at": {**INTEGER, "minimum": 0}, "metadata": METADATA}


def _retrieve(what: str, response: str) -> Operation:
    return Operation(f"Retrieve {what}", response, query=NO_PARAMS)


BILLING_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/v1/customers"): Operation("Create a customer", "Customer", body=params(_CUSTOMER)),
    ("GET", "/v1/customers"): Operation(
        "List customers", "CustomerList", query=page_query({"email": text(512)})
    ),
    ("GET", "/v1/customers/{id}"): _retrieve("a customer (a deleted one as deleted)", "Customer"),
    ("POST", "/v1/customers/{id}"): Operation(
        "Update a customer", "Customer", body=params(_CUSTOMER)
    ),
    ("DELETE", "/v1/customers/{id}"): Operation(
        "Delete a customer", "DeletedCustomer", query=NO_PARAMS
    ),
    ("POST", "/v1/products"): Operation(
        "Create a product", "Product", body=params(_PRODUCT, required=("name",))
    ),
    ("GET", "/v1/products"): Operation(
        "List products", "ProductList", query=page_query({"active": BOOLEAN})
    ),
    ("GET", "/v1/products/{id}"): _retrieve("a product", "Product"),
    ("POST", "/v1/products/{id}"): Operation("Update a product", "Product", body=params(_PRODUCT)),
    ("POST", "/v1/prices"): Operation("Create a price", "Price", body=_NEW_PRICE),
    ("GET", "/v1/prices"): Operation(
        "List prices",
        "PriceList",
        query=page_query(
            {
                "active": BOOLEAN,
                "type": enum("one_time", "recurring"),
                "currency": _CURRENCY,
                "lookup_keys[]": array(text(200)),
                **ids("product"),
            }
        ),
    ),
    ("GET", "/v1/prices/{id}"): _retrieve("a price", "Price"),
    ("POST", "/v1/prices/{id}"): Operation("Update a price", "Price", body=params(_PRICE_CHANGES)),
    ("POST", "/v1/subscriptions"): Operation(
        "Create a subscription",
        "Subscription",
        body=params(
            {
                **_SUBSCRIPTION_CHANGES,
                "customer": text(255, min_length=1),
                "items": {**array(_ITEM), "minItems": 1, "maxItems": 20},
                "billing_cycle_anchor": {**INTEGER, "minimum": 0},
                "backdate_start_date": {**INTEGER, "minimum": 0},
            },
            required=("customer", "items"),
        ),
    ),
    ("GET", "/v1/subscriptions"): Operation(
        "List subscriptions",
        "SubscriptionList",
        query=page_query({"status": enum("active", "all", "canceled"), **ids("customer", "price")}),
    ),
    ("GET", "/v1/subscriptions/{id}"): _retrieve("a subscription", "Subscription"),
    ("POST", "/v1/subscriptions/{id}"): Operation(
        "Update a subscription", "Subscription", body=params(_SUBSCRIPTION_CHANGES)
    ),
    ("DELETE", "/v1/subscriptions/{id}"): Operation(
        "Cancel a subscription",
        "Subscription",
        query=params({"invoice_now": BOOLEAN, "prorate": BOOLEAN}),
    ),
    ("GET", "/v1/subscription_items"): Operation(
        "List a subscription's items",
        "SubscriptionItemList",
        query=page_query(ids("subscription")) | {"required": ["subscription"]},
    ),
    ("GET", "/v1/subscription_items/{id}"): _retrieve("a subscription item", "SubscriptionItem"),
    ("POST", "/v1/invoices/create_preview"): Operation(
        "Preview the current period's invoice",
        "Invoice",
        body=params(ids("customer", "subscription")),
    ),
    ("GET", "/v1/invoices"): Operation(
        "List invoices",
        "InvoiceList",
        query=page_query(
            {
                "status": enum("draft", "open", "paid", "uncollectible", "void"),
                **ids("customer", "subscription"),
                **CREATED,
            }
        ),
    ),
    ("GET", "/v1/invoices/{id}"): _retrieve("an invoice", "Invoice"),
    ("GET", "/v1/invoices/{id}/lines"): Operation(
        "List an invoice's lines", "LineItemList", query=page_query()
    ),
    ("POST", "/v1/invoices/{id}/pay"): Operation(
        "Mark an open invoice paid out of band",
        "Invoice",
        body=params({"paid_out_of_band": BOOLEAN}, required=("paid_out_of_band",)),
    ),
    ("POST", "/v1/invoices/{id}/void"): Operation(
        "Void an open invoice", "Invoice", body=NO_PARAMS
    ),
    ("POST", "/v1/billing/credit_grants"): Operation(
        "Create a credit grant",
        "CreditGrant",
        body=params(
            {
                **_GRANT_CHANGES,
                "customer": text(255, min_length=1),
                "amount": _MONETARY,
                "applicability_config": _SCOPE,
                "category": enum("paid", "promotional"),
                "effective_at": {**INTEGER, "minimum": 0},
                "name": text(100),
                "priority": {**INTEGER, "minimum": 0, "maximum": 100},
            },
            required=("customer", "amount", "applicability_config"),
        ),
    ),
    ("GET", "/v1/billing/credit_grants"): Operation(
        "List credit grants", "CreditGrantList", query=page_query(ids("customer"))
    ),
    ("GET", "/v1/billing/credit_grants/{id}"): _retrieve("a credit grant", "CreditGrant"),
    ("POST", "/v1/billing/credit_grants/{id}"): Operation(
        "Update a credit grant", "CreditGrant", body=params(_GRANT_CHANGES)
    ),
    ("POST", "/v1/billing/credit_grants/{id}/expire"): Operation(
        "Expire a credit grant now", "CreditGrant", body=NO_PARAMS
    ),
    ("POST", "/v1/billing/credit_grants/{id}/void"): Operation(
        "Void a credit grant", "CreditGrant", body=NO_PARAMS
    ),
    ("GET", "/v1/billing/credit_balance_transactions"): Operation(
        "List credit balance transactions",
        "CreditBalanceTransactionList",
        query=page_query(ids("customer", "credit_grant")),
    ),
    ("GET", "/v1/billing/credit_balance_transactions/{id}"): _retrieve(
        "a credit balance transaction", "CreditBalanceTransaction"
    ),
    ("GET", "/v1/billing/credit_balance_summary"): Operation(
        "A customer's credit balances",
        "CreditBalanceSummary",
        query=params(
            {
                "customer": text(255, min_length=1),
                "filter[type]": enum("applicability_scope", "credit_grant"),
                "filter[credit_grant]": text(255),
                "filter[applicability_scope][price_type]": enum("metered"),
            },
            required=("customer", "filter[type]"),
        ),
    ),
}
