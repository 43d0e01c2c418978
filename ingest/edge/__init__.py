"""The HTTP edge every API shares: requests and responses, forms and parameters, routing, auth,
idempotency keys, rate limits, list pagination, the Stripe-shaped errors and the metrics."""
