-- Refunds of confirmed orders (RefundOrder). An order's status follows its
-- succeeded refunds: `partially_refunded`, then `refunded` once they add up
-- to its total.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN
    ('pending', 'reserved', 'confirmed', 'cancelled', 'partially_refunded', 'refunded'));

-- Every refund is planned and recorded under its order's row lock, so two
-- refunds never take the same units.
CREATE TABLE order_refunds (
    refund_id           uuid        PRIMARY KEY,
    order_id            uuid        NOT NULL REFERENCES orders (order_id),
    -- Admin-chosen key; the same order and key always mean the same refund.
    idempotency_key     text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    -- Canonical form of the request the key was first used with.
    request_fingerprint text        NOT NULL,
    amount_minor        bigint      NOT NULL CHECK (amount_minor > 0),
    currency            text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- The units go back in stock (svc-inventory, on orders.refund_requested).
    restock             boolean     NOT NULL,
    status              text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    failure_reason      text,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT order_refunds_idempotency_key_unique UNIQUE (order_id, idempotency_key),
    CONSTRAINT order_refunds_failure_reason_iff_failed CHECK ((status = 'failed') = (failure_reason IS NOT NULL))
);

-- What each refund gives back, at the prices the order was paid at.
CREATE TABLE order_refund_lines (
    refund_id        uuid    NOT NULL REFERENCES order_refunds (refund_id),
    line_no          integer NOT NULL,
    sku              text    NOT NULL,
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_minor bigint  NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (refund_id, line_no)
);
