-- Orders of svc-order.

CREATE TABLE orders (
    order_id            uuid        PRIMARY KEY,
    user_id             text        NOT NULL,
    -- Client-chosen key; the same user and key always mean the same order.
    idempotency_key     text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    -- Canonical form of the request the key was first used with.
    request_fingerprint text        NOT NULL,
    status              text        NOT NULL CHECK (status IN ('pending', 'reserved', 'confirmed', 'cancelled')),
    cancel_reason       text        CHECK (cancel_reason IN
                                        ('out_of_stock', 'payment_declined', 'reservation_expired', 'customer_cancelled')),
    payment_method      text        NOT NULL,
    total_minor         bigint      NOT NULL CHECK (total_minor >= 0),
    currency            text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT orders_idempotency_key_unique UNIQUE (user_id, idempotency_key),
    CONSTRAINT orders_cancel_reason_iff_cancelled CHECK ((status = 'cancelled') = (cancel_reason IS NOT NULL))
);

-- ListOrders: the caller's orders, newest first, keyset-paged.
CREATE INDEX orders_by_user_newest_first ON orders (user_id, created_at DESC, order_id DESC);

CREATE TABLE order_lines (
    order_id         uuid    NOT NULL REFERENCES orders (order_id),
    line_no          integer NOT NULL,
    sku              text    NOT NULL,
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_minor bigint  NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, line_no)
);
