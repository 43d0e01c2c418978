"""The descriptions of the replay extension's routes (``/v1/meterflow/replays``)."""

from __future__ import annotations

from ingest.openapi.operation import NO_PARAMS, Operation
from ingest.openapi.shapes import INTEGER, array, params, text

REPLAY_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/v1/meterflow/replays"): Operation(
        "Re-drive rejected events through validation (a meterflow extension)",
        "Replay",
        body=params(
            {
                "codes": {**array(text(100, min_length=1)), "maxItems": 20},
                "meter": text(255, min_length=1),
                "event_name": text(100, min_length=1),
                "rejected_at": params(
                    {"gte": {**INTEGER, "minimum": 0}, "lt": {**INTEGER, "minimum": 0}}
                ),
            }
        ),
        description=(
            "Reads the account and mode's rejected events, checks each again against its meter "
            "as it is now, publishes those that pass and sends those that fail back to the "
            "rejected events, with a fresh error report. Each event keeps its identifier and "
            "timestamp, so replaying twice counts nothing twice. Runs in the background; one "
            "at a time per account and mode (409 otherwise)."
        ),
    ),
    ("GET", "/v1/meterflow/replays/{id}"): Operation(
        "Follow a replay's progress and outcomes (a meterflow extension)",
        "Replay",
        query=NO_PARAMS,
    ),
}
