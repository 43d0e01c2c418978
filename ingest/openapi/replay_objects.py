"""The shape of the replay extension's object, ``meterflow.replay``."""

from __future__ import annotations

from ingest.openapi.shapes import (
    BOOLEAN,
    INTEGER,
    STRING,
    TIMESTAMP,
    Schema,
    array,
    const,
    enum,
    nullable,
    shape,
)

_COUNT: Schema = {**INTEGER, "minimum": 0}

REPLAY_OBJECTS: dict[str, Schema] = {
    "Replay": shape(
        {
            "id": STRING,
            "object": const("meterflow.replay"),
            "type": const("rejected_events"),
            "livemode": BOOLEAN,
            "status": enum("running", "succeeded", "failed"),
            "created": TIMESTAMP,
            "finished_at": nullable(TIMESTAMP),
            "filters": shape(
                {
                    "codes": array(STRING),
                    "meter": nullable(STRING),
                    "event_name": nullable(STRING),
                    "rejected_at": shape({"gte": nullable(TIMESTAMP), "lt": nullable(TIMESTAMP)}),
                }
            ),
            "progress": shape(
                {
                    "records_read": _COUNT,
                    "records_total": _COUNT,
                    "rejections_matched": _COUNT,
                }
            ),
            "outcomes": shape(
                {"accepted": _COUNT, "duplicate": _COUNT, "rejected": _COUNT, "too_old": _COUNT}
            ),
            "rejected_codes": {"type": "object", "additionalProperties": _COUNT},
            "too_old_identifiers": array(STRING),
            "failure_message": nullable(STRING),
        }
    )
}
