"""Wire records between processes: what ingest puts on the meter-events and rejected-events
topics, and what the aggregator relays on the usage-changes topic."""
