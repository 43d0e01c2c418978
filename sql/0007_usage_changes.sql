-- The usage-change feed: every fold transaction appends one row per (meter, customer) whose
-- usage it changed, with the span of event times touched. Written in the same transaction as the
-- rollups, so a change is recorded exactly when it becomes visible; consumers (the alert
-- evaluator) read it in seq order and remember how far they got.
CREATE TABLE usage_changes (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      text NOT NULL,
    livemode        boolean NOT NULL,
    meter_id        text NOT NULL,
    customer        text NOT NULL,
    first_event_ts  bigint NOT NULL,   -- earliest event time the batch touched (unix seconds)
    last_event_ts   bigint NOT NULL,   -- latest event time the batch touched
    changed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_changes_age ON usage_changes (changed_at);
