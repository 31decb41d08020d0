-- Messaging tables every publishing/consuming service has in its own database.

-- Transactional outbox: written in the same transaction as the state change,
-- published by the relay with Nats-Msg-Id = event_id.
CREATE TABLE outbox (
    event_id     uuid PRIMARY KEY,
    event_type   text        NOT NULL,
    subject      text        NOT NULL,
    order_id     text        NOT NULL,
    payload      bytea       NOT NULL,
    traceparent  text,
    occurred_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text
);

CREATE INDEX outbox_unpublished ON outbox (created_at, event_id) WHERE published_at IS NULL;

-- Inbox: one row per (consumer, event) processed, written in the same
-- transaction as the effect, so redelivery and replay change nothing.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    subject      text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, event_id)
);
