-- Per (meter, customer, UTC hour of event time): the minute rollups added up, so reads over long
-- ranges (invoice previews, alerts, summaries) cost per hour rather than per minute. The fold
-- keeps it in step with rollups_minute in the same transaction.
CREATE TABLE rollups_hour (
    account_id          text NOT NULL,
    livemode            boolean NOT NULL,
    meter_id            text NOT NULL,
    customer            text NOT NULL,
    hour_ts             bigint NOT NULL,  -- unix seconds, a multiple of 3600
    value_sum           numeric NOT NULL,
    event_count         bigint NOT NULL,
    -- The most recently received counted event of the hour: the `last` formula's candidate.
    last_value          numeric,
    last_received_ms    bigint,
    last_receipt_batch  text,
    last_receipt_index  integer,
    PRIMARY KEY (account_id, livemode, meter_id, customer, hour_ts)
) WITH (fillfactor = 70);

-- The hours of what was folded before this migration.
INSERT INTO rollups_hour
SELECT account_id, livemode, meter_id, customer, hour_ts, sum(value_sum), sum(event_count),
       (array_agg(last_value ORDER BY last_received_ms DESC, last_receipt_batch COLLATE "C" DESC,
                  last_receipt_index DESC))[1],
       max(last_received_ms),
       (array_agg(last_receipt_batch ORDER BY last_received_ms DESC,
                  last_receipt_batch COLLATE "C" DESC, last_receipt_index DESC))[1],
       (array_agg(last_receipt_index ORDER BY last_received_ms DESC,
                  last_receipt_batch COLLATE "C" DESC, last_receipt_index DESC))[1]
FROM (SELECT *, minute_ts - minute_ts % 3600 AS hour_ts FROM rollups_minute) m
GROUP BY account_id, livemode, meter_id, customer, hour_ts;
