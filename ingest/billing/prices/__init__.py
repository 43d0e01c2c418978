"""``/v1/prices``: how much, how often, and for metered prices, which meter."""
