"""Asynchronous error reports: rejected stream events tallied per window, exactly once, and
closed into v2 core events with webhook deliveries."""
