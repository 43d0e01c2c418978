"""Webhook rules shared by ingest (registering endpoints) and the aggregator (delivering)."""
