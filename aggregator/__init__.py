"""Kafka consumers: folding meter events into rollups, evaluating alerts."""
