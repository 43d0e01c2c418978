"""``/v2/billing/meter_event_session`` and ``meter_event_stream``: session tokens, and the
high-volume stream whose events are checked structurally now and semantically per event, with
rejections reported asynchronously."""
