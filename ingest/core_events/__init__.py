"""``/v2/core/events``: reading v2 events (meter error reports)."""
