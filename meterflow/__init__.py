"""meterflow: a self-hosted, Stripe-compatible meter event pipeline."""
