"""``/v1/events``: reading v1 events (``billing.alert.triggered``)."""
