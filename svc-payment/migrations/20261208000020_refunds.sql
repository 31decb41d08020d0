-- Refunds of confirmed orders, one row per refund svc-order asked for
-- (its id). `attempt` numbers the provider refund asked for now: each has
-- its own idempotency key, so a lost answer is asked again as the same
-- refund, and a failed one is followed by a new one.
CREATE TABLE refunds (
    refund_id          text        PRIMARY KEY,
    payment_id         uuid        NOT NULL REFERENCES payments (payment_id),
    order_id           text        NOT NULL,
    user_id            text        NOT NULL,
    amount_minor       bigint      NOT NULL CHECK (amount_minor > 0),
    currency           text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status             text        NOT NULL CHECK (status IN ('requested', 'pending', 'succeeded', 'failed')),
    attempt            integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    provider_refund_id text,
    failure_reason     text,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX refunds_pending ON refunds (payment_id) WHERE status = 'pending';
