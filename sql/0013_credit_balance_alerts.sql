-- Credit balance alerts: a customer's live available credit balance in one currency at or below a
-- monetary value. An alert is armed until it fires; it fires once, and is re-armed when an
-- evaluation finds the balance above the value again.

ALTER TABLE billing_alerts DROP CONSTRAINT billing_alerts_alert_type_check;
ALTER TABLE billing_alerts ADD CONSTRAINT billing_alerts_alert_type_check
    CHECK (alert_type IN ('usage_threshold', 'credit_balance_threshold'));
ALTER TABLE billing_alerts
    ALTER COLUMN meter_id DROP NOT NULL,
    ALTER COLUMN gte DROP NOT NULL,
    ALTER COLUMN recurrence DROP NOT NULL,
    ADD COLUMN lte_currency text,                          -- ISO 4217, lower case
    ADD COLUMN lte_value bigint CHECK (lte_value >= 0),    -- minor units
    ADD CONSTRAINT billing_alerts_shape CHECK (
        (alert_type = 'usage_threshold'
            AND meter_id IS NOT NULL AND gte IS NOT NULL AND recurrence IS NOT NULL
            AND lte_currency IS NULL AND lte_value IS NULL)
        OR (alert_type = 'credit_balance_threshold'
            AND lte_currency IS NOT NULL AND lte_value IS NOT NULL AND customer IS NOT NULL
            AND meter_id IS NULL AND gte IS NULL AND recurrence IS NULL));
-- What the evaluator asks for the customers a batch or a recheck concerns (one query for all).
CREATE INDEX billing_alerts_credit_watching ON billing_alerts (account_id, livemode, customer)
    WHERE status = 'active' AND alert_type = 'credit_balance_threshold';

-- Whether a credit balance alert is armed, and how many times it fired. Evaluators lock the rows
-- (FOR UPDATE, in alert id order) while they evaluate, so one evaluation at a time decides, and
-- the firing and the disarming commit together. A firing is recorded in alert_firings with
-- (alert, customer, period_start = its sequence number, 1, 2, ...).
CREATE TABLE credit_alert_states (
    alert_id     text PRIMARY KEY REFERENCES billing_alerts (id),
    armed        boolean NOT NULL DEFAULT true,
    firings      integer NOT NULL DEFAULT 0
);

-- Customers whose credit alerts to evaluate again once `due_s` (unix seconds; 0: at once) has
-- come: written by the triggers below when the ledger or a grant's expiry changes (whatever wrote
-- it), and by the alerts API when an alert is created or reactivated. Usage changes are evaluated
-- from the usage-changes topic instead. The evaluator's sweep deletes due rows (SKIP LOCKED) and
-- evaluates their customers in the same transaction. Writers upsert (ON CONFLICT DO UPDATE): a row
-- they find committed stays locked by them until their change commits, so no sweep can take it
-- and evaluate the customer without seeing the change.
CREATE TABLE credit_alert_rechecks (
    account_id   text NOT NULL,
    livemode     boolean NOT NULL,
    customer_id  text NOT NULL,
    due_s        bigint NOT NULL,
    PRIMARY KEY (account_id, livemode, customer_id, due_s)
);
CREATE INDEX credit_alert_rechecks_due ON credit_alert_rechecks (due_s);

-- When a change made at `now_s` that takes effect at `at_s` is due: at once (0), or later.
CREATE FUNCTION credit_alert_recheck_due(at_s bigint, now_s bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN at_s > now_s THEN at_s ELSE 0 END $$;

-- Every ledger entry, due when it takes effect (a grant effective later counts from then).
CREATE FUNCTION credit_alert_recheck_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO credit_alert_rechecks (account_id, livemode, customer_id, due_s)
    SELECT DISTINCT account_id, livemode, customer_id,
           credit_alert_recheck_due(effective_at, floor(extract(epoch FROM now()))::bigint)
    FROM appended
    ON CONFLICT (account_id, livemode, customer_id, due_s) DO UPDATE SET due_s = excluded.due_s;
    RETURN NULL;
END $$;
CREATE TRIGGER credit_alert_recheck_ledger AFTER INSERT ON credit_ledger
    REFERENCING NEW TABLE AS appended FOR EACH STATEMENT
    EXECUTE FUNCTION credit_alert_recheck_ledger();

-- A grant created, voided, or given a new expiry: due at once, and again when it expires (its
-- credits stop counting then, before the ledger records the expiry).
CREATE FUNCTION credit_alert_recheck_grant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO credit_alert_rechecks (account_id, livemode, customer_id, due_s)
    SELECT DISTINCT NEW.account_id, NEW.livemode, NEW.customer_id,
           credit_alert_recheck_due(at_s, floor(extract(epoch FROM now()))::bigint)
    FROM unnest(ARRAY[0, NEW.expires_at]) AS at_s
    WHERE at_s IS NOT NULL
    ON CONFLICT (account_id, livemode, customer_id, due_s) DO UPDATE SET due_s = excluded.due_s;
    RETURN NULL;
END $$;
CREATE TRIGGER credit_alert_recheck_grant AFTER INSERT OR UPDATE OF expires_at, voided_at
    ON credit_grants FOR EACH ROW EXECUTE FUNCTION credit_alert_recheck_grant();
