-- Asynchronous error reports, the v2 core events they become, webhook endpoints, and the
-- deliveries of events to those endpoints with a log of every attempt.

-- Rejected stream events counted per validation window (by receipt time) and code, until the
-- window closes and becomes one core event. Rows are deleted in the transaction that creates the
-- event, so a restart never reports a window twice.
CREATE TABLE error_report_windows (
    -- Identity of the row: a rejection arriving after its window was reported starts a new row,
    -- hence a new report; the lowest seq of a window's rows names that report.
    seq                 bigint GENERATED ALWAYS AS IDENTITY,
    account_id          text NOT NULL,
    livemode            boolean NOT NULL,
    meter_id            text NOT NULL,      -- '' when no meter matched (no_meter)
    window_start_ms     bigint NOT NULL,
    window_end_ms       bigint NOT NULL,
    code                text NOT NULL,
    error_count         bigint NOT NULL,
    -- The first few rejections of the window, in arrival order.
    sample_messages     text[] NOT NULL,
    sample_identifiers  text[] NOT NULL,
    PRIMARY KEY (account_id, livemode, meter_id, window_start_ms, code)
);
CREATE INDEX error_report_windows_due ON error_report_windows (window_end_ms);

-- v2 core events (thin events): what GET /v2/core/events serves and webhooks announce.
CREATE TABLE core_events (
    -- Monotonic insertion order: the list's sort key and pagination cursor.
    seq                bigint GENERATED ALWAYS AS IDENTITY,
    id                 text PRIMARY KEY,
    -- No foreign key: a report about an unknown account must not stall the reports behind it.
    account_id         text NOT NULL,
    livemode           boolean NOT NULL,
    type               text NOT NULL,
    created_ms         bigint NOT NULL,
    related_object_id  text,
    related_object     json,                -- {id, type, url}, or NULL
    data               json NOT NULL,
    -- What produced the event; creating it again with the same key does nothing.
    source_key         text NOT NULL,
    CONSTRAINT core_events_source_unique UNIQUE (account_id, livemode, source_key)
);
CREATE UNIQUE INDEX core_events_list ON core_events (account_id, livemode, seq);
CREATE INDEX core_events_by_object ON core_events (account_id, livemode, related_object_id, seq)
    WHERE related_object_id IS NOT NULL;

CREATE TABLE webhook_endpoints (
    seq             bigint GENERATED ALWAYS AS IDENTITY,
    id              text PRIMARY KEY,
    account_id      text NOT NULL REFERENCES accounts (id),
    livemode        boolean NOT NULL,
    url             text NOT NULL,
    enabled_events  text[] NOT NULL,        -- event types, or '*' for all
    description     text,
    metadata        jsonb NOT NULL DEFAULT '{}',
    -- The signing secret (whsec_…): needed in clear to sign, shown to the client only once.
    secret          text NOT NULL,
    status          text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    created         bigint NOT NULL
);
CREATE UNIQUE INDEX webhook_endpoints_list ON webhook_endpoints (account_id, livemode, seq);

-- One event to one endpoint. The body is kept exactly as signed and sent.
CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id      text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         text NOT NULL,
    event_type       text NOT NULL,
    body             text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- Attempts started so far; a worker claims attempt n+1 by raising it, and records the outcome
    -- only if it is still n+1 (a slower worker whose lease ran out records nothing).
    attempt_count    integer NOT NULL DEFAULT 0,
    -- When a pending delivery is next due; while an attempt runs, when its lease ends.
    next_attempt_ms  bigint NOT NULL,
    created_ms       bigint NOT NULL,
    completed_ms     bigint,
    CONSTRAINT webhook_deliveries_once UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_ms)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_ms)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);

-- Every attempt: its answer (or why there was none) and how long it took.
CREATE TABLE webhook_delivery_attempts (
    delivery_id  bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    started_ms   bigint NOT NULL,
    duration_ms  integer NOT NULL,
    status_code  integer,                  -- NULL when no HTTP answer came
    error        text,                     -- NULL when the endpoint answered 2xx
    PRIMARY KEY (delivery_id, attempt)
);
