-- Charges the provider settles later (`processing`), or once the customer
-- authenticated (`requires_action`, with the page to do it at), and
-- `refunding`: money captured after the payment had ended, on its way back.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'processing', 'requires_action', 'voiding', 'refunding',
                      'succeeded', 'failed', 'refunded', 'cancelled'));
ALTER TABLE payments ADD COLUMN next_action_url text;

-- The provider's webhooks, stored by event id before they are answered:
-- a repeat is recognised, and one not yet handled (a crash between storing
-- and handling) is picked up again. Only the intent it names is used; what
-- it claims is read again from the provider.
CREATE TABLE webhook_events (
    event_id     text        PRIMARY KEY,
    event_type   text        NOT NULL,
    object_type  text        NOT NULL,
    object_id    text        NOT NULL,
    body         jsonb       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    handled_at   timestamptz,
    attempts     integer     NOT NULL DEFAULT 0
);
CREATE INDEX webhook_events_unhandled ON webhook_events (received_at) WHERE handled_at IS NULL;

-- How far reconciliation has read the provider's event list. One row.
CREATE TABLE provider_checkpoint (
    only_row       boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_event_id  text,
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
INSERT INTO provider_checkpoint DEFAULT VALUES;
