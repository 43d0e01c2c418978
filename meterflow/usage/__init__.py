"""Folded usage: its key, and the one module of queries that reads it (summaries, alert
evaluation, previews and balances all read through :mod:`meterflow.usage.reader`)."""
