-- Refunds of confirmed orders that put their units back in stock.

-- How many units of each sold line came back with refunds: never more than
-- were sold. A later release gives back only what is still sold.
ALTER TABLE reservation_lines
    ADD COLUMN returned integer NOT NULL DEFAULT 0
        CONSTRAINT reservation_lines_returned_within_quantity CHECK (returned BETWEEN 0 AND quantity);

-- One row per refund whose units went back in stock, so a refund heard
-- again under a new event id (which the inbox, keyed by event id, would let
-- through) restocks nothing twice.
CREATE TABLE returns (
    refund_id  text        PRIMARY KEY,
    order_id   text        NOT NULL REFERENCES reservations (order_id),
    created_at timestamptz NOT NULL DEFAULT now()
);
