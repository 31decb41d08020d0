//! Notifications in Postgres.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{compose::Kind, sender::Email};

/// A notification about to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub notification_id: Uuid,
    pub order_id: String,
    pub user_id: String,
    pub kind: Kind,
    /// The refund a refund's email is about; empty for an order's own.
    pub refund_id: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
}

/// A stored notification, as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRecord {
    pub notification_id: Uuid,
    pub order_id: String,
    pub user_id: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct UnsentRow {
    notification_id: Uuid,
    recipient: String,
    subject: String,
    body: String,
    created_at: DateTime<Utc>,
    attempts: i32,
}

/// An unsent email under a row lock, with the attempts made so far.
#[derive(Debug, Clone)]
pub struct Unsent {
    pub email: Email,
    pub attempts: i32,
}

impl From<UnsentRow> for Unsent {
    fn from(r: UnsentRow) -> Self {
        Self {
            email: Email {
                notification_id: r.notification_id,
                recipient: r.recipient,
                subject: r.subject,
                body: r.body,
                created_at: r.created_at,
            },
            attempts: r.attempts,
        }
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Stores `n` unless the order already has a notification of this kind
/// (about this refund, for a refund's).
/// `resend_after` is when the resend loop may pick it up if the immediate
/// send never happens (a crash right after commit). Returns whether it was
/// inserted.
pub async fn insert(conn: &mut PgConnection, n: &NewNotification, resend_after: Duration) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO notifications
             (notification_id, order_id, user_id, kind, refund_id, recipient, subject, body, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp() + make_interval(secs => $9))
         ON CONFLICT (order_id, kind, refund_id) DO NOTHING",
    )
    .bind(n.notification_id)
    .bind(&n.order_id)
    .bind(&n.user_id)
    .bind(n.kind.as_str())
    .bind(&n.refund_id)
    .bind(&n.recipient)
    .bind(&n.subject)
    .bind(&n.body)
    .bind(seconds(resend_after))
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The notification if it is unsent and no one else holds it, locked until
/// the transaction ends.
pub async fn lock_unsent(conn: &mut PgConnection, notification_id: Uuid) -> Result<Option<Unsent>, sqlx::Error> {
    let row: Option<UnsentRow> = sqlx::query_as(
        "SELECT notification_id, recipient, subject, body, created_at, attempts
           FROM notifications
          WHERE notification_id = $1 AND sent_at IS NULL
            FOR UPDATE SKIP LOCKED",
    )
    .bind(notification_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// The oldest unsent notification due for another attempt that no one else
/// holds, locked until the transaction ends.
pub async fn lock_next_due(conn: &mut PgConnection) -> Result<Option<Unsent>, sqlx::Error> {
    let row: Option<UnsentRow> = sqlx::query_as(
        "SELECT notification_id, recipient, subject, body, created_at, attempts
           FROM notifications
          WHERE sent_at IS NULL AND next_attempt_at <= clock_timestamp()
          ORDER BY next_attempt_at
          LIMIT 1
            FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

pub async fn mark_sent(conn: &mut PgConnection, notification_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET sent_at = clock_timestamp(), attempts = attempts + 1, last_error = NULL
          WHERE notification_id = $1",
    )
    .bind(notification_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a failed attempt; the resend loop tries again after `retry_after`.
pub async fn mark_failed(
    conn: &mut PgConnection,
    notification_id: Uuid,
    error: &str,
    retry_after: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications
            SET attempts = attempts + 1, last_error = $2,
                next_attempt_at = clock_timestamp() + make_interval(secs => $3)
          WHERE notification_id = $1",
    )
    .bind(notification_id)
    .bind(error)
    .bind(seconds(retry_after))
    .execute(conn)
    .await?;
    Ok(())
}

/// Notifications of `user_id` (everyone's when `None`), optionally about
/// one order, newest first.
pub async fn list(
    pool: &PgPool,
    user_id: Option<&str>,
    order_id: Option<&str>,
    limit: i64,
) -> Result<Vec<NotificationRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT notification_id, order_id, user_id, recipient, subject, body, created_at, sent_at
           FROM notifications
          WHERE ($1::text IS NULL OR user_id = $1)
            AND ($2::text IS NULL OR order_id = $2)
          ORDER BY created_at DESC, notification_id DESC
          LIMIT $3",
    )
    .bind(user_id)
    .bind(order_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
