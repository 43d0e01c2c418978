"""The billing APIs: customers, products, prices, subscriptions and invoice previews. Rating and
periods are pure, in :mod:`meterflow.billing`; usage is read through :mod:`meterflow.usage`."""
