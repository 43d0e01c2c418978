-- Meter event sessions: the keys that sign session tokens, and per-account revocations.
-- Tokens themselves are not stored: any ingest process verifies one from its signature alone.

-- The newest key signs; every key here verifies. Rotating adds a key; a key can be deleted once
-- tokens signed with it have expired (15 minutes after the next key was added).
CREATE TABLE session_signing_keys (
    id          text PRIMARY KEY,
    secret      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Sessions of an account and mode created before ``revoked_before_ms`` are refused.
CREATE TABLE session_revocations (
    account_id         text NOT NULL,
    livemode           boolean NOT NULL,
    revoked_before_ms  bigint NOT NULL,
    PRIMARY KEY (account_id, livemode)
);
