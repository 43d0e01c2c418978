-- Pre-aggregated meters (event_time_window = hour or day): only the most recently received event
-- of each (meter, customer, UTC window) counts. This table holds that survivor per window; its
-- minute row in rollups_minute holds exactly that one event, so summaries read raw and
-- pre-aggregated meters alike. Earlier events of the window stay in meter_events, where a cancel
-- of the survivor finds the one to restore.
CREATE TABLE window_survivors (
    account_id     text NOT NULL,
    livemode       boolean NOT NULL,
    meter_id       text NOT NULL,
    customer       text NOT NULL,
    window_ts      bigint NOT NULL,   -- unix seconds, start of the UTC hour or day
    identifier     text NOT NULL,
    value          numeric NOT NULL,
    event_ts       bigint NOT NULL,
    received_ms    bigint NOT NULL,
    receipt_batch  text NOT NULL,
    receipt_index  integer NOT NULL,
    PRIMARY KEY (account_id, livemode, meter_id, customer, window_ts)
);
