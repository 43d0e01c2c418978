-- Idempotency-Key of POST requests, per account and mode: the first request's fingerprint and,
-- once it finished with an outcome worth replaying, its response. Honoured for 24 h after the
-- first request; the aggregator's maintenance pass prunes older rows.
CREATE TABLE idempotency_keys (
    account_id       text NOT NULL,
    livemode         boolean NOT NULL,
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_method   text NOT NULL,
    request_path     text NOT NULL,
    -- SHA-256 of the method, path and canonical parameters.
    fingerprint      bytea NOT NULL,
    created_ms       bigint NOT NULL,    -- unix ms when the request that holds the key arrived
    -- Request-Id of the request executing (or that executed) under the key: only it may complete
    -- or release the row, and replays name it in Original-Request.
    owner_request    text NOT NULL,
    state            text NOT NULL CHECK (state IN ('in_progress', 'completed')),
    response_status  integer,
    response_content_type text,
    response_headers jsonb,              -- [[name, value], ...] besides Content-Type
    response_body    bytea,
    PRIMARY KEY (account_id, livemode, idempotency_key),
    CONSTRAINT idempotency_keys_completed_has_response CHECK (
        state = 'in_progress'
        OR (response_status IS NOT NULL AND response_content_type IS NOT NULL
            AND response_headers IS NOT NULL AND response_body IS NOT NULL)
    )
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_ms);
