"""Rebuilding rollups from the meter-events topic (``meterflow replay rebuild``)."""
