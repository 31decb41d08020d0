-- Customer emails of svc-notify.

-- One row per email. UNIQUE (order_id, kind) keeps it to one email per order
-- event even when the event is replayed under a new event id (which the
-- inbox, keyed by event id, would let through).
--   sent_at          NULL until the sender accepted the message
--   next_attempt_at  when the resend loop may try an unsent row again
--                    (backs off after each failure)
CREATE TABLE notifications (
    notification_id uuid        PRIMARY KEY,
    order_id        text        NOT NULL,
    user_id         text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('order_confirmed', 'order_cancelled')),
    recipient       text        NOT NULL,
    subject         text        NOT NULL,
    body            text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at         timestamptz,
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT notifications_one_per_order_event UNIQUE (order_id, kind)
);

-- ListNotifications: a user's emails, newest first (and everyone's, for admins).
CREATE INDEX notifications_by_user ON notifications (user_id, created_at DESC, notification_id DESC);
CREATE INDEX notifications_newest ON notifications (created_at DESC, notification_id DESC);

-- The resend loop's work queue stays small: only unsent rows are indexed.
CREATE INDEX notifications_unsent ON notifications (next_attempt_at) WHERE sent_at IS NULL;
