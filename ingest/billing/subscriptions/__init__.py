"""``/v1/subscriptions`` and ``/v1/subscription_items``: a customer on recurring prices, with each
item's current period."""
