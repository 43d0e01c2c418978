"""The ``meterflow ingest`` process: the Stripe-compatible HTTP API. One sub-package per API, each
with its handlers, its store (the SQL) and its parameter rules; ``edge/`` is what they share
(HTTP plumbing, auth, idempotency, rate limits, errors, metrics)."""
