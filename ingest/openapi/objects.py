"""The shapes of the objects the metering endpoints answer with, and of the error bodies."""

from __future__ import annotations

from ingest.openapi.shapes import (
    ANY_OBJECT,
    BOOLEAN,
    INTEGER,
    NUMBER,
    RFC3339,
    STRING,
    STRING_MAP,
    TIMESTAMP,
    Schema,
    array,
    const,
    enum,
    nullable,
    ref,
    shape,
    v1_list,
)

ERRORS: dict[str, Schema] = {
    "Error": shape(
        {
            "error": shape(
                {"type": STRING, "message": STRING, "code": STRING, "param": STRING},
                optional=("code", "param"),
            )
        }
    ),
    "V2Error": shape({"error": shape({"type": STRING, "code": STRING, "message": STRING})}),
}

METER = shape(
    {
        "id": STRING,
        "object": const("billing.meter"),
        "created": TIMESTAMP,
        "customer_mapping": shape({"event_payload_key": STRING, "type": const("by_id")}),
        "default_aggregation": shape({"formula": enum("count", "last", "sum")}),
        "display_name": STRING,
        "event_name": STRING,
        "event_time_window": nullable(enum("day", "hour")),
        "livemode": BOOLEAN,
        "status": enum("active", "inactive"),
        "status_transitions": shape({"deactivated_at": nullable(TIMESTAMP)}),
        "updated": TIMESTAMP,
        "value_settings": shape({"event_payload_key": STRING}),
    }
)

_EVENT_FIELDS: dict[str, Schema] = {
    "event_name": STRING,
    "identifier": STRING,
    "livemode": BOOLEAN,
    "payload": STRING_MAP,
}
_CANCEL = shape({"identifier": STRING})

METERING: dict[str, Schema] = {
    "Meter": METER,
    "MeterList": v1_list(ref("Meter")),
    "MeterEvent": shape(
        {
            "object": const("billing.meter_event"),
            "created": TIMESTAMP,
            **_EVENT_FIELDS,
            "timestamp": TIMESTAMP,
        }
    ),
    "V2MeterEvent": shape(
        {
            "object": const("v2.billing.meter_event"),
            "created": RFC3339,
            **_EVENT_FIELDS,
            "timestamp": RFC3339,
        }
    ),
    "MeterEventAdjustment": shape(
        {
            "object": const("billing.meter_event_adjustment"),
            "livemode": BOOLEAN,
            "status": const("pending"),
            "event_name": STRING,
            "type": const("cancel"),
            "cancel": _CANCEL,
        }
    ),
    "V2MeterEventAdjustment": shape(
        {
            "id": STRING,
            "object": const("v2.billing.meter_event_adjustment"),
            "cancel": _CANCEL,
            "created": RFC3339,
            "event_name": STRING,
            "livemode": BOOLEAN,
            "status": const("pending"),
            "type": const("cancel"),
        }
    ),
    "MeterEventSummaryList": v1_list(
        shape(
            {
                "id": STRING,
                "object": const("billing.meter_event_summary"),
                "aggregated_value": NUMBER,
                "end_time": TIMESTAMP,
                "livemode": BOOLEAN,
                "meter": STRING,
                "start_time": TIMESTAMP,
            }
        )
    ),
    "MeterEventSession": shape(
        {
            "id": STRING,
            "object": const("v2.billing.meter_event_session"),
            "authentication_token": STRING,
            "created": RFC3339,
            "expires_at": RFC3339,
            "livemode": BOOLEAN,
        }
    ),
    "MeterEventSessionRevocation": shape(
        {
            "object": const("v2.billing.meter_event_session_revocation"),
            "revoked_before": RFC3339,
            "livemode": BOOLEAN,
        }
    ),
    "MeterEventStreamAccepted": {"type": "object", "maxProperties": 0},
}

# Stripe's spec: context, reason and related_object are optional and never null.
_V2_EVENT = shape(
    {
        "id": STRING,
        "object": const("v2.core.event"),
        "type": STRING,
        "created": RFC3339,
        "livemode": BOOLEAN,
        "context": STRING,
        "reason": ANY_OBJECT,
        "related_object": shape({"id": STRING, "type": STRING, "url": STRING}),
        "data": ANY_OBJECT,
    },
    optional=("context", "reason", "related_object"),
)

EVENTS: dict[str, Schema] = {
    "Event": shape(
        {
            "id": STRING,
            "object": const("event"),
            "api_version": nullable(STRING),
            "created": TIMESTAMP,
            "data": shape(
                {"object": ANY_OBJECT, "previous_attributes": ANY_OBJECT},
                optional=("previous_attributes",),
            ),
            "livemode": BOOLEAN,
            "pending_webhooks": INTEGER,
            "request": shape({"id": nullable(STRING), "idempotency_key": nullable(STRING)}),
            "type": STRING,
        }
    ),
    "EventList": v1_list(ref("Event")),
    "V2Event": _V2_EVENT,
    "V2EventList": shape(
        {
            "data": array(ref("V2Event")),
            "next_page_url": nullable(STRING),
            "previous_page_url": nullable(STRING),
        }
    ),
}

_WEBHOOK_ENDPOINT = shape(
    {
        "id": STRING,
        "object": const("webhook_endpoint"),
        "api_version": nullable(STRING),
        "application": nullable(STRING),
        "created": TIMESTAMP,
        "description": nullable(STRING),
        "enabled_events": array(STRING),
        "livemode": BOOLEAN,
        "metadata": STRING_MAP,
        "secret": STRING,
        "status": enum("enabled", "disabled"),
        "url": STRING,
    },
    optional=("secret",),
)

_DELIVERY = shape(
    {
        "id": STRING,
        "object": const("webhook_delivery"),
        "webhook_endpoint": STRING,
        "event": STRING,
        "event_type": STRING,
        "status": STRING,
        "attempt_count": INTEGER,
        "created": TIMESTAMP,
        "next_attempt_at": nullable(TIMESTAMP),
        "completed_at": nullable(TIMESTAMP),
        "attempts": array(
            shape(
                {
                    "attempt": INTEGER,
                    "created": TIMESTAMP,
                    "duration_ms": nullable(INTEGER),
                    "status_code": nullable(INTEGER),
                    "error": nullable(STRING),
                }
            )
        ),
    }
)

WEBHOOKS_AND_ALERTS: dict[str, Schema] = {
    "WebhookEndpoint": _WEBHOOK_ENDPOINT,
    "WebhookEndpointList": v1_list(ref("WebhookEndpoint")),
    "DeletedWebhookEndpoint": shape(
        {"id": STRING, "object": const("webhook_endpoint"), "deleted": const(True)}
    ),
    "WebhookDeliveryList": v1_list(_DELIVERY),
    # The usage or credit balance fields depend on the request's Stripe-Version.
    "Alert": shape(
        {
            "id": STRING,
            "object": const("billing.alert"),
            "alert_type": enum("usage_threshold", "credit_balance_threshold"),
            "livemode": BOOLEAN,
            "status": enum("active", "archived", "inactive"),
            "title": STRING,
        }
    ),
    "AlertList": v1_list(ref("Alert")),
}

OPERATIONAL: dict[str, Schema] = {
    "Health": shape({"status": const("ok")}),
    "Ready": shape({"status": const("ready")}),
    "OpenApiDocument": shape({"openapi": STRING, "info": ANY_OBJECT, "paths": ANY_OBJECT}),
}
