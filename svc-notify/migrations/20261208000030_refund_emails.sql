-- Emails about refunds of confirmed orders: one when a refund went through,
-- one when it could not be made. An order may be refunded several times, so
-- a refund's email is one per order, kind and refund; the order's own emails
-- have no refund ('').
ALTER TABLE notifications ADD COLUMN refund_id text NOT NULL DEFAULT '';

ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('order_confirmed', 'order_cancelled', 'refund_succeeded', 'refund_failed'));

ALTER TABLE notifications DROP CONSTRAINT notifications_one_per_order_event;
ALTER TABLE notifications ADD CONSTRAINT notifications_one_per_order_event UNIQUE (order_id, kind, refund_id);
