-- An outbox row's `key` is what its event is about, the last token of its
-- subject: an order id for the saga's events, a SKU for the catalog's.
ALTER TABLE outbox RENAME COLUMN order_id TO key;
