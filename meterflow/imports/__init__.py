"""Bulk imports of meter events from a file (``meterflow import``): CSV or JSON Lines in
Stripe's meter event fields, checked by the same rules as the API and published on the same
Kafka path, resumable after an interruption."""
