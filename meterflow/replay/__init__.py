"""Replaying topics outside the consumer groups: re-driving rejected events (``meterflow replay
rejected`` and ``POST /v1/meterflow/replays``)."""
