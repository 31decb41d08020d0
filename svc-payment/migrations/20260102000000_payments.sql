-- Payments of svc-payment.

-- One payment per order. payment_id doubles as the provider-side
-- idempotency key, so a retried charge is the same charge.
CREATE TABLE payments (
    payment_id      uuid        PRIMARY KEY,
    order_id        text        NOT NULL CONSTRAINT payments_one_per_order UNIQUE,
    user_id         text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'refunded', 'cancelled')),
    amount_minor    bigint      NOT NULL CHECK (amount_minor >= 0),
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    payment_method  text        NOT NULL,
    charge_id       text,
    failure_reason  text,
    attempts        integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The simulated payment provider's own ledger. In production this is the
-- provider's system; it lives here so the simulation survives restarts and
-- tests can count real charges.
CREATE SCHEMA simulated_provider;

CREATE TABLE simulated_provider.charges (
    charge_id       uuid        PRIMARY KEY,
    idempotency_key text        NOT NULL UNIQUE,
    payment_method  text        NOT NULL,
    amount_minor    bigint      NOT NULL,
    currency        text        NOT NULL,
    -- 'succeeded' and 'refunded' mean money moved once; 'declined' and
    -- 'voided' mean it never did.
    status          text        NOT NULL CHECK (status IN ('succeeded', 'declined', 'refunded', 'voided')),
    calls           integer     NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
