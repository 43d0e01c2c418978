-- Meter events folded exactly once: raw events, the dedupe index, per-minute rollups, and the
-- consumer offsets committed in the same transaction as the rollups they produced.

-- Every accepted, non-duplicate event. Kept at least 35 days (cancels, `last` fallbacks,
-- pre-aggregation survivors, rebuilds); partitioned by event day so old days drop cheaply.
CREATE TABLE meter_events (
    account_id     text NOT NULL,
    livemode       boolean NOT NULL,
    meter_id       text NOT NULL,
    customer       text NOT NULL,
    identifier     text NOT NULL,
    value          numeric NOT NULL,
    event_ts       bigint NOT NULL,      -- unix seconds, the client's timestamp
    received_ms    bigint NOT NULL,      -- receipt order: (received_ms, receipt_batch, receipt_index)
    receipt_batch  text NOT NULL,
    receipt_index  integer NOT NULL,
    cancelled      boolean NOT NULL DEFAULT false
) PARTITION BY RANGE (event_ts);
CREATE INDEX meter_events_window ON meter_events (account_id, livemode, meter_id, customer, event_ts);

-- Identifiers seen recently, per account and mode: the dedupe set (at least 24 h, pruned after
-- 48 h) and the way from a cancel's identifier to the event it cancels.
CREATE TABLE event_identifiers (
    account_id   text NOT NULL,
    livemode     boolean NOT NULL,
    identifier   text NOT NULL,
    meter_id     text NOT NULL,
    customer     text NOT NULL,
    event_ts     bigint NOT NULL,
    received_ms  bigint NOT NULL,
    PRIMARY KEY (account_id, livemode, identifier)
);
CREATE INDEX event_identifiers_age ON event_identifiers (received_ms);

-- Per (meter, customer, UTC minute of event time): what the summaries read.
CREATE TABLE rollups_minute (
    account_id          text NOT NULL,
    livemode            boolean NOT NULL,
    meter_id            text NOT NULL,
    customer            text NOT NULL,
    minute_ts           bigint NOT NULL,  -- unix seconds, a multiple of 60
    value_sum           numeric NOT NULL,
    event_count         bigint NOT NULL,
    -- The most recently received counted event of the minute: the `last` formula's candidate.
    last_value          numeric,
    last_received_ms    bigint,
    last_receipt_batch  text,
    last_receipt_index  integer,
    PRIMARY KEY (account_id, livemode, meter_id, customer, minute_ts)
);

-- Next offset to read per consumer group and partition; written with the rollups it covers.
CREATE TABLE consumer_offsets (
    group_id     text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
