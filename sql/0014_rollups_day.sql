-- Per (meter, customer, UTC day of event time): the hour rollups added up, so a read over a
-- month costs about the same as a read over a day (a few day rows, plus the hours and minutes at
-- its edges). The fold keeps it in step with rollups_hour in the same transaction.
CREATE TABLE rollups_day (
    account_id          text NOT NULL,
    livemode            boolean NOT NULL,
    meter_id            text NOT NULL,
    customer            text NOT NULL,
    day_ts              bigint NOT NULL,  -- unix seconds, a multiple of 86400
    value_sum           numeric NOT NULL,
    event_count         bigint NOT NULL,
    -- The most recently received counted event of the day: the `last` formula's candidate.
    last_value          numeric,
    last_received_ms    bigint,
    last_receipt_batch  text,
    last_receipt_index  integer,
    PRIMARY KEY (account_id, livemode, meter_id, customer, day_ts)
) WITH (fillfactor = 70);

-- The days of what was folded before this migration.
INSERT INTO rollups_day
SELECT account_id, livemode, meter_id, customer, day_ts, sum(value_sum), sum(event_count),
       (array_agg(last_value ORDER BY last_received_ms DESC, last_receipt_batch COLLATE "C" DESC,
                  last_receipt_index DESC))[1],
       max(last_received_ms),
       (array_agg(last_receipt_batch ORDER BY last_received_ms DESC,
                  last_receipt_batch COLLATE "C" DESC, last_receipt_index DESC))[1],
       (array_agg(last_receipt_index ORDER BY last_received_ms DESC,
                  last_receipt_batch COLLATE "C" DESC, last_receipt_index DESC))[1]
FROM (SELECT *, hour_ts - hour_ts % 86400 AS day_ts FROM rollups_hour) h
GROUP BY account_id, livemode, meter_id, customer, day_ts;
