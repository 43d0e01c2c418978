"""``/v1/billing/alerts``: creating and managing billing alerts, which ``meterflow alerts``
evaluates."""
