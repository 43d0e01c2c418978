"""The HTTP edge: Stripe-compatible API, validation, authentication."""
