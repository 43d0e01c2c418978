"""Every route's description, keyed by method and path template. The document is built from the
router's routes; a route missing here (or an entry without a route) fails the unit tests."""

from __future__ import annotations

from ingest.openapi.billing_operations import BILLING_OPERATIONS
from ingest.openapi.operation import (
    CREATED,
    METADATA,
    NO_PARAMS,
    Operation,
    ids,
    page_query,
)
from ingest.openapi.replay_operations import REPLAY_OPERATIONS
from ingest.openapi.shapes import (
    BOOLEAN,
    INTEGER,
    STRING,
    STRING_MAP,
    Schema,
    array,
    enum,
    params,
    text,
)

METERS = "/v1/billing/meters"
_PAYLOAD: Schema = {**STRING_MAP, "maxProperties": 50}
_METER_EVENT = params(
    {
        "event_name": text(100, min_length=1),
        "payload": _PAYLOAD,
        "identifier": text(100, min_length=1),
        "timestamp": INTEGER,
    },
    required=("event_name", "payload"),
)
_CANCEL = params(
    {
        "event_name": text(100, min_length=1),
        "type": enum("cancel"),
        "cancel": params({"identifier": text(100, min_length=1)}, required=("identifier",)),
    },
    required=("event_name", "type", "cancel"),
)
_V2_METER_EVENT = params(
    {
        "event_name": text(100, min_length=1),
        "payload": _PAYLOAD,
        "identifier": text(100, min_length=1),
        "timestamp": {"type": "string", "format": "date-time"},
    },
    required=("event_name", "payload"),
)
_NEW_METER = params(
    {
        "display_name": text(250, min_length=1),
        "event_name": text(100, min_length=1),
        "default_aggregation": params(
            {"formula": enum("count", "last", "sum")}, required=("formula",)
        ),
        "customer_mapping": params(
            {"event_payload_key": text(100, min_length=1), "type": enum("by_id")},
            required=("event_payload_key", "type"),
        ),
        "value_settings": params(
            {"event_payload_key": text(100, min_length=1)}, required=("event_payload_key",)
        ),
        "event_time_window": enum("day", "hour"),
    },
    required=("display_name", "event_name", "default_aggregation"),
)
_TYPES = {"types[]": array(text(100))}
_ENDPOINT = {
    "url": text(2048, min_length=1),
    "enabled_events": {**array(STRING), "minItems": 1},
    "description": text(5000),
    "metadata": METADATA,
}

METERING_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", METERS): Operation("Create a meter", "Meter", body=_NEW_METER),
    ("GET", METERS): Operation(
        "List meters", "MeterList", query=page_query({"status": enum("active", "inactive")})
    ),
    ("POST", METERS + "/{id}"): Operation(
        "Update a meter's display name",
        "Meter",
        body=params({"display_name": text(250, min_length=1)}),
    ),
    ("GET", METERS + "/{id}"): Operation("Retrieve a meter", "Meter", query=NO_PARAMS),
    ("POST", METERS + "/{id}/deactivate"): Operation("Deactivate a meter", "Meter", body=NO_PARAMS),
    ("POST", METERS + "/{id}/reactivate"): Operation("Reactivate a meter", "Meter", body=NO_PARAMS),
    ("GET", METERS + "/{id}/event_summaries"): Operation(
        "Usage of one customer over a range, whole or per hour or day",
        "MeterEventSummaryList",
        query=page_query(
            {
                "customer": text(255, min_length=1),
                "start_time": INTEGER,
                "end_time": INTEGER,
                "value_grouping_window": enum("day", "hour"),
            }
        )
        | {"required": ["customer", "start_time", "end_time"]},
    ),
    ("POST", "/v1/billing/meter_events"): Operation(
        "Record a meter event", "MeterEvent", body=_METER_EVENT
    ),
    ("POST", "/v2/billing/meter_events"): Operation(
        "Record a meter event (v2)", "V2MeterEvent", style="v2", body=_V2_METER_EVENT
    ),
    ("POST", "/v1/billing/meter_event_adjustments"): Operation(
        "Cancel a meter event", "MeterEventAdjustment", body=_CANCEL
    ),
    ("POST", "/v2/billing/meter_event_adjustments"): Operation(
        "Cancel a meter event (v2)", "V2MeterEventAdjustment", style="v2", body=_CANCEL
    ),
    ("POST", "/v2/billing/meter_event_session"): Operation(
        "Create a meter event session for the stream",
        "MeterEventSession",
        style="v2",
        body=NO_PARAMS,
    ),
    ("POST", "/v2/billing/meter_event_session/revoke"): Operation(
        "Revoke every meter event session of the account and mode",
        "MeterEventSessionRevocation",
        style="v2",
        body=NO_PARAMS,
    ),
    ("POST", "/v2/billing/meter_event_stream"): Operation(
        "Send up to 100 meter events at once",
        "MeterEventStreamAccepted",
        style="stream",
        body=params(
            {"events": {**array(_V2_METER_EVENT), "minItems": 1, "maxItems": 100}},
            required=("events",),
        ),
        description="Authenticated with a meter event session's token, not an API key.",
    ),
}

EVENT_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/v1/events"): Operation(
        "List v1 events, newest first",
        "EventList",
        query=page_query({"type": text(100), **_TYPES, **CREATED}),
    ),
    ("GET", "/v1/events/{id}"): Operation("Retrieve a v1 event", "Event", query=NO_PARAMS),
    ("GET", "/v2/core/events"): Operation(
        "List v2 events (thin events), newest first",
        "V2EventList",
        style="v2",
        query=params(
            {
                "limit": {**INTEGER, "minimum": 1, "maximum": 100},
                "object_id": text(255),
                "types[]": array(text(100)),
                "page": text(200),
            }
        ),
    ),
    ("GET", "/v2/core/events/{id}"): Operation(
        "Retrieve a v2 event", "V2Event", style="v2", query=NO_PARAMS
    ),
    ("POST", "/v1/webhook_endpoints"): Operation(
        "Create a webhook endpoint",
        "WebhookEndpoint",
        body=params(_ENDPOINT, required=("url", "enabled_events")),
    ),
    ("GET", "/v1/webhook_endpoints"): Operation(
        "List webhook endpoints", "WebhookEndpointList", query=page_query()
    ),
    ("GET", "/v1/webhook_endpoints/{id}"): Operation(
        "Retrieve a webhook endpoint", "WebhookEndpoint", query=NO_PARAMS
    ),
    ("POST", "/v1/webhook_endpoints/{id}"): Operation(
        "Update a webhook endpoint",
        "WebhookEndpoint",
        body=params({**_ENDPOINT, "disabled": BOOLEAN}),
    ),
    ("DELETE", "/v1/webhook_endpoints/{id}"): Operation(
        "Delete a webhook endpoint", "DeletedWebhookEndpoint", query=NO_PARAMS
    ),
    ("GET", "/v1/webhook_endpoints/{id}/deliveries"): Operation(
        "List an endpoint's deliveries with their attempts (a meterflow extension)",
        "WebhookDeliveryList",
        query=page_query(),
    ),
}

_USAGE_THRESHOLD = params(
    {
        "gte": {**INTEGER, "minimum": 1},
        "meter": text(255, min_length=1),
        "recurrence": enum("one_time", "daily", "monthly"),
        "filters": array(params({"type": enum("customer"), "customer": text(255, min_length=1)})),
    },
    required=("gte", "meter", "recurrence"),
)

ALERT_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/v1/billing/alerts"): Operation(
        "Create a billing alert",
        "Alert",
        body=params(
            {
                "alert_type": enum("usage_threshold", "credit_balance_threshold"),
                "title": text(256, min_length=1),
                "usage_threshold": _USAGE_THRESHOLD,
            },
            required=("alert_type", "title"),
        ),
    ),
    ("GET", "/v1/billing/alerts"): Operation(
        "List billing alerts",
        "AlertList",
        query=page_query(
            {
                "alert_type": enum("usage_threshold", "credit_balance_threshold"),
                **ids("meter", "customer"),
            }
        ),
    ),
    ("GET", "/v1/billing/alerts/{id}"): Operation(
        "Retrieve a billing alert", "Alert", query=NO_PARAMS
    ),
    ("POST", "/v1/billing/alerts/{id}/activate"): Operation(
        "Activate a billing alert", "Alert", body=NO_PARAMS
    ),
    ("POST", "/v1/billing/alerts/{id}/deactivate"): Operation(
        "Deactivate a billing alert", "Alert", body=NO_PARAMS
    ),
    ("POST", "/v1/billing/alerts/{id}/archive"): Operation(
        "Archive a billing alert for good", "Alert", body=NO_PARAMS
    ),
}

OPERATIONAL_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/metrics"): Operation("Prometheus metrics", "text", style="public"),
    ("GET", "/healthz"): Operation("Liveness: the process answers", "Health", style="public"),
    ("GET", "/readyz"): Operation(
        "Readiness: PostgreSQL answers and the Kafka producer is connected",
        "Ready",
        style="public",
    ),
    ("GET", "/openapi.json"): Operation("This document", "OpenApiDocument", style="public"),
}

OPERATIONS: dict[tuple[str, str], Operation] = {
    **OPERATIONAL_OPERATIONS,
    **METERING_OPERATIONS,
    **EVENT_OPERATIONS,
    **ALERT_OPERATIONS,
    **BILLING_OPERATIONS,
    **REPLAY_OPERATIONS,
}
