"""The shapes of the billing objects: customers, products, prices, subscriptions, invoices and
credits. Each names the fields meterflow fills; the rest of Stripe's fields follow, mostly null."""

from __future__ import annotations

from ingest.openapi.shapes import (
    ANY_OBJECT,
    BOOLEAN,
    INTEGER,
    STRING,
    STRING_MAP,
    TIMESTAMP,
    Schema,
    array,
    const,
    enum,
    nullable,
    ref,
    shape,
    v1_list,
)

_MONETARY = shape(
    {
        "type": const("monetary"),
        "monetary": shape({"currency": STRING, "value": INTEGER}),
    }
)

_CUSTOMER = shape(
    {
        "id": STRING,
        "object": const("customer"),
        "balance": INTEGER,
        "created": TIMESTAMP,
        "description": nullable(STRING),
        "email": nullable(STRING),
        "livemode": BOOLEAN,
        "metadata": STRING_MAP,
        "name": nullable(STRING),
    }
)
_DELETED_CUSTOMER = shape({"id": STRING, "object": const("customer"), "deleted": const(True)})

_PRODUCT = shape(
    {
        "id": STRING,
        "object": const("product"),
        "active": BOOLEAN,
        "created": TIMESTAMP,
        "description": nullable(STRING),
        "livemode": BOOLEAN,
        "metadata": STRING_MAP,
        "name": STRING,
        "type": const("service"),
        "updated": TIMESTAMP,
    }
)

_PRICE = shape(
    {
        "id": STRING,
        "object": const("price"),
        "active": BOOLEAN,
        "billing_scheme": enum("per_unit", "tiered"),
        "created": TIMESTAMP,
        "currency": STRING,
        "livemode": BOOLEAN,
        "lookup_key": nullable(STRING),
        "metadata": STRING_MAP,
        "nickname": nullable(STRING),
        "product": STRING,
        "recurring": nullable(
            shape(
                {
                    "interval": enum("day", "week", "month", "year"),
                    "interval_count": INTEGER,
                    "meter": nullable(STRING),
                    "usage_type": enum("licensed", "metered"),
                }
            )
        ),
        "tiers_mode": nullable(enum("graduated", "volume")),
        "transform_quantity": nullable(shape({"divide_by": INTEGER, "round": enum("down", "up")})),
        "type": enum("one_time", "recurring"),
        "unit_amount": nullable(INTEGER),
        "unit_amount_decimal": nullable(STRING),
    }
)

_SUBSCRIPTION_ITEM = shape(
    {
        "id": STRING,
        "object": const("subscription_item"),
        "created": TIMESTAMP,
        "current_period_end": TIMESTAMP,
        "current_period_start": TIMESTAMP,
        "metadata": STRING_MAP,
        "price": ref("Price"),
        "quantity": INTEGER,
        "subscription": STRING,
    },
    optional=("quantity",),
)

_SUBSCRIPTION = shape(
    {
        "id": STRING,
        "object": const("subscription"),
        "billing_cycle_anchor": TIMESTAMP,
        "cancel_at_period_end": BOOLEAN,
        "canceled_at": nullable(TIMESTAMP),
        "created": TIMESTAMP,
        "currency": STRING,
        "customer": STRING,
        "ended_at": nullable(TIMESTAMP),
        "items": v1_list(ref("SubscriptionItem")),
        "livemode": BOOLEAN,
        "metadata": STRING_MAP,
        "start_date": TIMESTAMP,
        "status": STRING,
    }
)

_LINE_ITEM = shape(
    {
        "id": STRING,
        "object": const("line_item"),
        "amount": INTEGER,
        "currency": STRING,
        "description": nullable(STRING),
        "invoice": nullable(STRING),
        "livemode": BOOLEAN,
        "period": shape({"start": TIMESTAMP, "end": TIMESTAMP}),
        "pretax_credit_amounts": array(ANY_OBJECT),
        "pricing": ANY_OBJECT,
        "quantity": INTEGER,
        "quantity_decimal": STRING,
        "subtotal": INTEGER,
    }
)

_INVOICE = shape(
    {
        "id": nullable(STRING),
        "object": const("invoice"),
        "amount_due": INTEGER,
        "amount_paid": INTEGER,
        "amount_remaining": INTEGER,
        "billing_reason": STRING,
        "created": TIMESTAMP,
        "currency": STRING,
        "customer": STRING,
        "lines": v1_list(ref("LineItem")),
        "livemode": BOOLEAN,
        "metadata": STRING_MAP,
        "number": nullable(STRING),
        "period_end": TIMESTAMP,
        "period_start": TIMESTAMP,
        "status": enum("draft", "open", "paid", "void"),
        "status_transitions": ANY_OBJECT,
        "subtotal": INTEGER,
        "total": INTEGER,
    }
)

_CREDIT_GRANT = shape(
    {
        "id": STRING,
        "object": const("billing.credit_grant"),
        "amount": _MONETARY,
        "applicability_config": ANY_OBJECT,
        "category": enum("paid", "promotional"),
        "created": TIMESTAMP,
        "customer": STRING,
        "effective_at": nullable(TIMESTAMP),
        "expires_at": nullable(TIMESTAMP),
        "livemode": BOOLEAN,
        "metadata": STRING_MAP,
        "name": nullable(STRING),
        "priority": nullable(INTEGER),
        "updated": TIMESTAMP,
        "voided_at": nullable(TIMESTAMP),
    }
)

_CREDIT_TRANSACTION = shape(
    {
        "id": STRING,
        "object": const("billing.credit_balance_transaction"),
        "created": TIMESTAMP,
        "credit": nullable(ANY_OBJECT),
        "credit_grant": STRING,
        "debit": nullable(ANY_OBJECT),
        "effective_at": TIMESTAMP,
        "livemode": BOOLEAN,
        "type": enum("credit", "debit"),
    }
)

BILLING: dict[str, Schema] = {
    "Customer": {"anyOf": [_CUSTOMER, _DELETED_CUSTOMER]},
    "DeletedCustomer": _DELETED_CUSTOMER,
    "CustomerList": v1_list(_CUSTOMER),
    "Product": _PRODUCT,
    "ProductList": v1_list(ref("Product")),
    "Price": _PRICE,
    "PriceList": v1_list(ref("Price")),
    "Subscription": _SUBSCRIPTION,
    "SubscriptionList": v1_list(ref("Subscription")),
    "SubscriptionItem": _SUBSCRIPTION_ITEM,
    "SubscriptionItemList": v1_list(ref("SubscriptionItem")),
    "Invoice": _INVOICE,
    "InvoiceList": v1_list(ref("Invoice")),
    "LineItem": _LINE_ITEM,
    "LineItemList": v1_list(ref("LineItem")),
    "CreditGrant": _CREDIT_GRANT,
    "CreditGrantList": v1_list(ref("CreditGrant")),
    "CreditBalanceTransaction": _CREDIT_TRANSACTION,
    "CreditBalanceTransactionList": v1_list(ref("CreditBalanceTransaction")),
    "CreditBalanceSummary": shape(
        {
            "object": const("billing.credit_balance_summary"),
            "balances": array(shape({"available_balance": _MONETARY, "ledger_balance": _MONETARY})),
            "customer": STRING,
            "livemode": BOOLEAN,
        }
    ),
}
