-- Billing alerts (usage thresholds), the record of each firing, and the v1 events they produce.

CREATE TABLE billing_alerts (
    -- Monotonic insertion order: the list endpoint's sort key and pagination cursor.
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    id           text PRIMARY KEY,                       -- alrt_…
    account_id   text NOT NULL REFERENCES accounts (id),
    livemode     boolean NOT NULL,
    alert_type   text NOT NULL CHECK (alert_type IN ('usage_threshold')),
    title        text NOT NULL,
    meter_id     text NOT NULL REFERENCES meters (id),
    customer     text,                                   -- NULL: every customer of the meter
    gte          bigint NOT NULL CHECK (gte >= 1),
    recurrence   text NOT NULL CHECK (recurrence IN ('one_time', 'daily', 'monthly')),
    status       text NOT NULL DEFAULT 'active'
                 CHECK (status IN ('active', 'inactive', 'archived')),
    created      bigint NOT NULL                         -- unix seconds
);
CREATE UNIQUE INDEX billing_alerts_list ON billing_alerts (account_id, livemode, seq);
-- What the evaluator asks for every changed (meter, customer): the active alerts that watch it.
CREATE INDEX billing_alerts_watching ON billing_alerts (account_id, livemode, meter_id, customer)
    WHERE status = 'active';

-- One row per firing. The key is the exactly-once guarantee: an (alert, customer, period) fires
-- at most once however often, and by however many evaluators, it is evaluated.
CREATE TABLE alert_firings (
    alert_id      text NOT NULL REFERENCES billing_alerts (id),
    customer      text NOT NULL,
    period_start  bigint NOT NULL,   -- unix seconds: UTC day or month start; 0 for one_time
    value         numeric NOT NULL,  -- the usage that reached the threshold
    event_id      text NOT NULL,     -- the billing.alert.triggered event it produced
    fired_ms      bigint NOT NULL,
    PRIMARY KEY (alert_id, customer, period_start)
);

-- v1 snapshot events (GET /v1/events), e.g. billing.alert.triggered.
CREATE TABLE v1_events (
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    id           text PRIMARY KEY,                       -- evt_…
    account_id   text NOT NULL,
    livemode     boolean NOT NULL,
    type         text NOT NULL,
    created      bigint NOT NULL,                        -- unix seconds
    body         json NOT NULL,                          -- the event object, exactly as delivered
    -- Whether the event is on the events topic yet; unpublished events are swept up and sent.
    published    boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX v1_events_list ON v1_events (account_id, livemode, seq);
CREATE INDEX v1_events_by_type ON v1_events (account_id, livemode, type, seq);
CREATE INDEX v1_events_unpublished ON v1_events (seq) WHERE NOT published;

-- The latest receipt time among the events a fold folded for the (meter, customer): how long
-- notification took, measured from the moment meterflow accepted the crossing event.
ALTER TABLE usage_changes ADD COLUMN last_received_ms bigint;
