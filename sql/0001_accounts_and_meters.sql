-- Accounts, their secret API keys (stored only as SHA-256 digests), and billing meters.

CREATE TABLE accounts (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_hash     bytea PRIMARY KEY,
    account_id   text NOT NULL REFERENCES accounts (id),
    livemode     boolean NOT NULL,
    -- The first characters and the last four, enough to recognise a key in a listing.
    display_hint text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE meters (
    -- Monotonic insertion order: the list endpoint's sort key and pagination cursor.
    seq                bigint GENERATED ALWAYS AS IDENTITY,
    id                 text PRIMARY KEY,
    account_id         text NOT NULL REFERENCES accounts (id),
    livemode           boolean NOT NULL,
    event_name         text NOT NULL,
    display_name       text NOT NULL,
    formula            text NOT NULL CHECK (formula IN ('sum', 'count', 'last')),
    customer_key       text NOT NULL,
    value_key          text NOT NULL,
    event_time_window  text CHECK (event_time_window IN ('hour', 'day')),
    status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    created            bigint NOT NULL,
    updated            bigint NOT NULL,
    deactivated_at     bigint,
    -- An event name routes events to exactly one meter per account and mode, active or not.
    CONSTRAINT meters_event_name_unique UNIQUE (account_id, livemode, event_name)
);
CREATE UNIQUE INDEX meters_list ON meters (account_id, livemode, seq);
