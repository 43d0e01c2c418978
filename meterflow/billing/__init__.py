"""Billing's pure core: money, price terms, rating and billing periods. No I/O; the HTTP APIs in
``ingest/`` and period closing in ``aggregator/`` build on it."""
