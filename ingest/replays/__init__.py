"""``/v1/meterflow/replays``: re-driving rejected events over HTTP, a meterflow extension."""
