"""Webhook delivery: v2 core events and their queued deliveries, signed POSTs with retries."""
