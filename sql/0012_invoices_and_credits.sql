-- Invoices closed from subscriptions' periods, credit grants, and the append-only credit ledger.

-- The period the closer invoices next: from `open_period_start` (a period boundary; NULL until the
-- closer first schedules the subscription, then its start date) to `next_close_at`.
ALTER TABLE subscriptions
    ADD COLUMN open_period_start bigint,
    ADD COLUMN next_close_at bigint;
-- Subscriptions the closer has yet to schedule, and those whose open period is due.
CREATE INDEX subscriptions_unscheduled ON subscriptions (seq)
    WHERE status = 'active' AND next_close_at IS NULL;
CREATE INDEX subscriptions_due ON subscriptions (next_close_at)
    WHERE status = 'active' AND next_close_at IS NOT NULL;
CREATE INDEX subscriptions_with_thresholds ON subscriptions (seq)
    WHERE status = 'active' AND threshold_amount_gte IS NOT NULL;

CREATE TABLE invoices (
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    id               text PRIMARY KEY,                   -- in_…
    account_id       text NOT NULL REFERENCES accounts (id),
    livemode         boolean NOT NULL,
    customer_id      text NOT NULL,
    customer_name    text,                               -- as when the invoice was created
    customer_email   text,
    subscription_id  text NOT NULL REFERENCES subscriptions (id),
    billing_reason   text NOT NULL CHECK (billing_reason IN
                         ('subscription_cycle', 'subscription_threshold', 'subscription_update')),
    -- What made it: 'cycle:<period start>', 'threshold:<period start>:<n>' or 'cancel:<period
    -- start>'. One invoice per key is the exactly-once guarantee of closing.
    close_key        text NOT NULL,
    period_start     bigint NOT NULL,
    period_end       bigint NOT NULL,
    currency         text NOT NULL,
    status           text NOT NULL CHECK (status IN ('draft', 'open', 'paid', 'void')),
    subtotal         bigint NOT NULL,                    -- minor units
    total_credits    bigint NOT NULL DEFAULT 0,          -- credits applied at finalization
    amount_due       bigint NOT NULL,
    amount_paid      bigint NOT NULL DEFAULT 0,
    finalize_at      bigint NOT NULL,                    -- unix seconds: the grace period's end
    number           text,
    created          bigint NOT NULL,
    finalized_at     bigint,
    paid_at          bigint,
    voided_at        bigint,
    paid_out_of_band boolean NOT NULL DEFAULT false,
    UNIQUE (subscription_id, close_key)
);
CREATE UNIQUE INDEX invoices_list ON invoices (account_id, livemode, seq);
CREATE INDEX invoices_by_customer ON invoices (account_id, livemode, customer_id, seq);
CREATE INDEX invoices_by_subscription ON invoices (subscription_id, seq);
CREATE INDEX invoices_to_finalize ON invoices (finalize_at) WHERE status = 'draft';

CREATE TABLE invoice_lines (
    id                    text PRIMARY KEY,              -- il_…
    invoice_id            text NOT NULL REFERENCES invoices (id),
    position              integer NOT NULL,              -- invoice order, from 0
    subscription_item_id  text NOT NULL REFERENCES subscription_items (id),
    price_id              text NOT NULL REFERENCES prices (id),
    metered               boolean NOT NULL,
    period_start          bigint NOT NULL,
    period_end            bigint NOT NULL,
    usage                 numeric NOT NULL,  -- the period's whole usage when rated (metered)
    quantity              numeric NOT NULL,  -- what this line bills, net of earlier invoices
    amount                bigint NOT NULL,   -- minor units, net of earlier invoices
    credits               bigint NOT NULL DEFAULT 0,
    description           text NOT NULL,
    UNIQUE (invoice_id, position)
);
-- What earlier invoices billed of an item's period (threshold invoices, then the period's end).
CREATE INDEX invoice_lines_by_item ON invoice_lines (subscription_item_id, period_start);

CREATE TABLE credit_grants (
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    id               text PRIMARY KEY,                   -- credgr_…
    account_id       text NOT NULL REFERENCES accounts (id),
    livemode         boolean NOT NULL,
    customer_id      text NOT NULL,
    name             text,
    category         text NOT NULL CHECK (category IN ('paid', 'promotional')),
    priority         integer NOT NULL CHECK (priority BETWEEN 0 AND 100),
    currency         text NOT NULL,
    amount           bigint NOT NULL CHECK (amount > 0), -- minor units
    -- The scope: every metered price (`scope_prices` NULL), or the prices listed.
    scope_prices     text[],
    effective_at     bigint NOT NULL,
    expires_at       bigint,
    voided_at        bigint,
    -- Whether the closer has expired what was left once `expires_at` passed.
    expiry_recorded  boolean NOT NULL DEFAULT false,
    metadata         jsonb NOT NULL DEFAULT '{}',
    created          bigint NOT NULL,
    updated          bigint NOT NULL,
    -- Equal when the grant was expired (POST …/expire) in the second it took effect; the API
    -- refuses a new expires_at that is not later than effective_at.
    CHECK (expires_at IS NULL OR expires_at >= effective_at)
);
CREATE UNIQUE INDEX credit_grants_list ON credit_grants (account_id, livemode, seq);
CREATE INDEX credit_grants_by_customer ON credit_grants (account_id, livemode, customer_id, seq);
-- Grants whose expiry the ledger has yet to record.
CREATE INDEX credit_grants_expiring ON credit_grants (expires_at)
    WHERE expires_at IS NOT NULL AND NOT expiry_recorded;

-- The ledger: one row per `billing.credit_balance_transaction`, never updated or deleted. A
-- grant's balance is its credits minus its debits.
CREATE TABLE credit_ledger (
    seq               bigint GENERATED ALWAYS AS IDENTITY,
    id                text PRIMARY KEY,                  -- cbtxn_…
    account_id        text NOT NULL REFERENCES accounts (id),
    livemode          boolean NOT NULL,
    customer_id       text NOT NULL,
    credit_grant_id   text NOT NULL REFERENCES credit_grants (id),
    type              text NOT NULL CHECK (type IN ('credit', 'debit')),
    reason            text NOT NULL CHECK (reason IN (
                          'credits_granted', 'credits_application_invoice_voided',
                          'credits_applied', 'credits_expired', 'credits_voided')),
    amount            bigint NOT NULL CHECK (amount > 0),
    currency          text NOT NULL,
    invoice_id        text REFERENCES invoices (id),
    invoice_line_id   text REFERENCES invoice_lines (id),
    effective_at      bigint NOT NULL,
    created           bigint NOT NULL,
    -- What recorded it, e.g. 'applied:<line>', 'expired:<grant>:<n>': each happens once.
    dedupe_key        text NOT NULL UNIQUE,
    CHECK ((type = 'credit') = (reason IN ('credits_granted', 'credits_application_invoice_voided')))
);
CREATE UNIQUE INDEX credit_ledger_list ON credit_ledger (account_id, livemode, seq);
CREATE INDEX credit_ledger_by_customer ON credit_ledger (account_id, livemode, customer_id, seq);
CREATE INDEX credit_ledger_by_grant ON credit_ledger (credit_grant_id, seq);

CREATE FUNCTION credit_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit_ledger is append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER credit_ledger_append_only BEFORE UPDATE OR DELETE ON credit_ledger
    FOR EACH ROW EXECUTE FUNCTION credit_ledger_append_only();
