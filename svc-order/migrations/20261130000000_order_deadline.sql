-- `timed_out`: the checkout did not settle within ORDER_DEADLINE.
ALTER TABLE orders DROP CONSTRAINT orders_cancel_reason_check;
ALTER TABLE orders ADD CONSTRAINT orders_cancel_reason_check CHECK (cancel_reason IN
    ('out_of_stock', 'payment_declined', 'reservation_expired', 'customer_cancelled', 'timed_out'));

-- The deadline sweep reads unsettled orders, oldest first.
CREATE INDEX orders_unsettled_by_age ON orders (created_at) WHERE status IN ('pending', 'reserved');
