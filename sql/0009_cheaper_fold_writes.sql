-- Cheaper writes on the fold's hot path; no change in what is stored.

-- The identifiers' age index serves only the hourly prune. Identifiers are inserted in about the
-- order they were received, so a BRIN index answers that prune while costing almost nothing per
-- insert (a btree took an extra index entry, and its WAL, for every event).
DROP INDEX event_identifiers_age;
CREATE INDEX event_identifiers_age ON event_identifiers USING brin (received_ms);

-- usage_changes rows live only until the relay publishes them, and no query read this index
-- (the prune compares a computed expression, not the column).
DROP INDEX usage_changes_age;

-- Rollup rows and window survivors are rewritten batch after batch without touching their keys.
-- Free room on each page lets PostgreSQL make those HOT updates: no new index entry per update.
ALTER TABLE rollups_minute SET (fillfactor = 70);
ALTER TABLE window_survivors SET (fillfactor = 70);
