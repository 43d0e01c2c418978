-- Replaying topics: re-drives of rejected events (meterflow replay rejected, and the
-- POST /v1/meterflow/replays extension), and bulk imports (meterflow import) that resume.

-- One re-drive started over HTTP, followed with GET /v1/meterflow/replays/:id. The process
-- running it writes its progress here about once a second (heartbeat_ms); a row still `running`
-- whose heartbeat stopped belongs to a process that died, and reads as failed.
CREATE TABLE rejected_replays (
    id               text PRIMARY KEY,
    account_id       text NOT NULL,
    livemode         boolean NOT NULL,
    filters          jsonb NOT NULL,
    status           text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    progress         jsonb NOT NULL DEFAULT '{}',   -- records read and to read, matched
    outcomes         jsonb NOT NULL DEFAULT '{}',   -- accepted, duplicate, rejected, too_old
    rejected_codes   jsonb NOT NULL DEFAULT '{}',   -- the codes of events that failed again
    too_old          text[] NOT NULL DEFAULT '{}',  -- identifiers now beyond 35 days (the first 100)
    failure_message  text,
    created_ms       bigint NOT NULL,
    heartbeat_ms     bigint NOT NULL,
    finished_ms      bigint
);
CREATE INDEX rejected_replays_running ON rejected_replays (account_id, livemode)
    WHERE status = 'running';

-- Identifiers a re-drive published to the meter-events topic, kept as long as the rejected
-- topic keeps events (40 days): a later re-drive skips them even once the aggregator's dedupe
-- set (48 hours) has forgotten them.
CREATE TABLE redriven_identifiers (
    account_id   text NOT NULL,
    livemode     boolean NOT NULL,
    identifier   text NOT NULL,
    redriven_ms  bigint NOT NULL,
    PRIMARY KEY (account_id, livemode, identifier)
);
CREATE INDEX redriven_identifiers_age ON redriven_identifiers USING brin (redriven_ms);

-- Where each bulk import got to. Every line up to lines_done is either acknowledged by Kafka or
-- written to the reject file, whose first reject_file_bytes bytes hold exactly those rejects; a
-- resumed import starts after lines_done and truncates the reject file there.
CREATE TABLE event_imports (
    import_id          text PRIMARY KEY,
    account_id         text NOT NULL,
    livemode           boolean NOT NULL,
    source             text NOT NULL,
    lines_done         bigint NOT NULL DEFAULT 0,
    accepted           bigint NOT NULL DEFAULT 0,
    rejected           bigint NOT NULL DEFAULT 0,
    reject_file_bytes  bigint NOT NULL DEFAULT 0,
    finished           boolean NOT NULL DEFAULT false,
    created_ms         bigint NOT NULL,
    updated_ms         bigint NOT NULL
);
