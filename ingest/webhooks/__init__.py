"""``/v1/webhook_endpoints``: where the account's events are sent, signed as Stripe signs them."""
