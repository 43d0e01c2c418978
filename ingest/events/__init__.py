"""``/v1/billing/meter_events`` and the v2 single-event endpoints: events checked synchronously and
published to Kafka before the answer; adjustments (cancels); the shared Kafka publisher."""
