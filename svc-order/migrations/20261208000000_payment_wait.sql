-- What a reserved order's payment waits for (payments.awaiting), and where
-- its customer authenticates it.
ALTER TABLE orders
    ADD COLUMN payment_wait text CHECK (payment_wait IN ('processing', 'customer_action')),
    ADD COLUMN next_action_url text CHECK (length(next_action_url) BETWEEN 1 AND 2048),
    ADD CONSTRAINT orders_payment_wait_only_while_reserved CHECK (payment_wait IS NULL OR status = 'reserved'),
    ADD CONSTRAINT orders_next_action_url_iff_customer_action
        CHECK ((payment_wait IS NOT DISTINCT FROM 'customer_action') = (next_action_url IS NOT NULL));

-- `payment_not_authenticated`: the customer had not authenticated the
-- payment when the reservation expired or the order deadline passed.
ALTER TABLE orders DROP CONSTRAINT orders_cancel_reason_check;
ALTER TABLE orders ADD CONSTRAINT orders_cancel_reason_check CHECK (cancel_reason IN
    ('out_of_stock', 'payment_declined', 'reservation_expired', 'customer_cancelled', 'timed_out',
     'payment_not_authenticated'));
