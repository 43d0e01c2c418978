"""``/v1/billing/meters``: meters, and their event summaries (read through the usage reader)."""
