-- Billing: customers, products, prices, subscriptions and their items. Every object belongs to one
-- account and mode; `seq` is each list endpoint's sort key and pagination cursor.

CREATE TABLE customers (
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    id           text PRIMARY KEY,                       -- cus_…
    account_id   text NOT NULL REFERENCES accounts (id),
    livemode     boolean NOT NULL,
    name         text,
    email        text,
    description  text,
    metadata     jsonb NOT NULL DEFAULT '{}',
    created      bigint NOT NULL,                        -- unix seconds
    deleted      boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX customers_list ON customers (account_id, livemode, seq);
CREATE INDEX customers_by_email ON customers (account_id, livemode, email, seq) WHERE NOT deleted;

CREATE TABLE products (
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    id           text PRIMARY KEY,                       -- prod_…
    account_id   text NOT NULL REFERENCES accounts (id),
    livemode     boolean NOT NULL,
    name         text NOT NULL,
    active       boolean NOT NULL DEFAULT true,
    description  text,
    metadata     jsonb NOT NULL DEFAULT '{}',
    created      bigint NOT NULL,
    updated      bigint NOT NULL
);
CREATE UNIQUE INDEX products_list ON products (account_id, livemode, seq);

CREATE TABLE prices (
    seq                  bigint GENERATED ALWAYS AS IDENTITY,
    id                   text PRIMARY KEY,               -- price_…
    account_id           text NOT NULL REFERENCES accounts (id),
    livemode             boolean NOT NULL,
    product_id           text NOT NULL REFERENCES products (id),
    active               boolean NOT NULL DEFAULT true,
    currency             text NOT NULL,                  -- ISO 4217, lower case
    type                 text NOT NULL CHECK (type IN ('one_time', 'recurring')),
    billing_scheme       text NOT NULL CHECK (billing_scheme IN ('per_unit', 'tiered')),
    -- Minor units, up to 12 decimal places; NULL for tiered prices.
    unit_amount_decimal  numeric,
    tiers_mode           text CHECK (tiers_mode IN ('graduated', 'volume')),
    -- [{"up_to": int|null, "unit_amount_decimal": "…"|null, "flat_amount_decimal": "…"|null}]
    tiers                jsonb,
    transform_divide_by  bigint CHECK (transform_divide_by > 0),
    transform_round      text CHECK (transform_round IN ('up', 'down')),
    interval             text CHECK (interval IN ('day', 'week', 'month', 'year')),
    interval_count       integer CHECK (interval_count > 0),
    usage_type           text CHECK (usage_type IN ('licensed', 'metered')),
    meter_id             text REFERENCES meters (id),
    nickname             text,
    lookup_key           text,
    metadata             jsonb NOT NULL DEFAULT '{}',
    created              bigint NOT NULL,
    CHECK ((billing_scheme = 'per_unit') = (unit_amount_decimal IS NOT NULL)),
    CHECK ((billing_scheme = 'tiered') = (tiers IS NOT NULL AND tiers_mode IS NOT NULL)),
    CHECK ((type = 'recurring') = (interval IS NOT NULL AND usage_type IS NOT NULL)),
    CHECK ((usage_type = 'metered') = (meter_id IS NOT NULL))
);
CREATE UNIQUE INDEX prices_list ON prices (account_id, livemode, seq);
CREATE UNIQUE INDEX prices_lookup_key ON prices (account_id, livemode, lookup_key)
    WHERE lookup_key IS NOT NULL;

CREATE TABLE subscriptions (
    seq                    bigint GENERATED ALWAYS AS IDENTITY,
    id                     text PRIMARY KEY,             -- sub_…
    account_id             text NOT NULL REFERENCES accounts (id),
    livemode               boolean NOT NULL,
    customer_id            text NOT NULL REFERENCES customers (id),
    status                 text NOT NULL CHECK (status IN ('active', 'canceled')),
    currency               text NOT NULL,
    billing_cycle_anchor   bigint NOT NULL,
    start_date             bigint NOT NULL,
    cancel_at_period_end   boolean NOT NULL DEFAULT false,
    canceled_at            bigint,
    ended_at               bigint,
    -- Stored now; acted on by invoicing.
    threshold_amount_gte   bigint,
    threshold_reset_anchor boolean,
    metadata               jsonb NOT NULL DEFAULT '{}',
    created                bigint NOT NULL
);
CREATE UNIQUE INDEX subscriptions_list ON subscriptions (account_id, livemode, seq);
CREATE INDEX subscriptions_by_customer ON subscriptions (account_id, livemode, customer_id, seq);

CREATE TABLE subscription_items (
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    id               text PRIMARY KEY,                   -- si_…
    account_id       text NOT NULL REFERENCES accounts (id),
    livemode         boolean NOT NULL,
    subscription_id  text NOT NULL REFERENCES subscriptions (id),
    price_id         text NOT NULL REFERENCES prices (id),
    quantity         bigint CHECK (quantity >= 0),       -- licensed prices only
    metadata         jsonb NOT NULL DEFAULT '{}',
    created          bigint NOT NULL,
    deleted          boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX subscription_items_list ON subscription_items (account_id, livemode, seq);
CREATE INDEX subscription_items_of ON subscription_items (subscription_id, seq) WHERE NOT deleted;
