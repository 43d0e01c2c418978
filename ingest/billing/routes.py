"""The billing APIs' routes, with their stores on one pool."""

from __future__ import annotations

import asyncpg

from ingest.billing.credits.grants_api import CreditGrantsApi
from ingest.billing.credits.grants_store import CreditGrantStore
from ingest.billing.credits.ledger_api import CreditLedgerApi
from ingest.billing.credits.ledger_store import CreditLedgerStore
from ingest.billing.customers.api import CustomersApi
from ingest.billing.customers.store import CustomerStore
from ingest.billing.invoices.api import InvoicesApi
from ingest.billing.invoices.store import InvoiceStore
from ingest.billing.invoices.transitions import InvoiceTransitions
from ingest.billing.prices.api import PricesApi
from ingest.billing.prices.store import PriceStore
from ingest.billing.products.api import ProductsApi
from ingest.billing.products.store import ProductStore
from ingest.billing.subscriptions.api import SubscriptionsApi
from ingest.billing.subscriptions.store import SubscriptionStore
from ingest.edge.routing import Route
from ingest.meters.store import MeterStore


def billing_routes(pool: asyncpg.Pool, meters: MeterStore, *, invoice_grace_s: int) -> list[Route]:
    customers = CustomerStore(pool)
    subscriptions = SubscriptionStore(pool, invoice_grace_s=invoice_grace_s)
    return [
        *CustomersApi(customers).routes(),
        *ProductsApi(ProductStore(pool)).routes(),
        *PricesApi(PriceStore(pool), meters).routes(),
        *SubscriptionsApi(subscriptions).routes(),
        *InvoicesApi(
            InvoiceStore(pool), InvoiceTransitions(pool), subscriptions, customers
        ).routes(),
        *CreditGrantsApi(CreditGrantStore(pool)).routes(),
        *CreditLedgerApi(CreditLedgerStore(pool)).routes(),
    ]
