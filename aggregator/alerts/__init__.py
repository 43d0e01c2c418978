"""The alert evaluator process (``meterflow alerts``): reads the usage-changes topic, fires each
(alert, customer, period) once, and publishes the v1 events; their webhooks are delivered by
the aggregator's webhook worker."""
