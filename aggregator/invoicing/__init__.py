"""Invoicing in the aggregator: closing periods, billing thresholds, finalizing invoices after
their grace period, and expiring credit grants."""
