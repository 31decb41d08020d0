//! Idempotent consumption: an event counts as processed by a consumer once
//! its row is in `inbox`, written in the same transaction as the effect.

use sqlx::PgConnection;

use crate::event::IncomingEvent;

/// Records `event` as processed by `consumer`. Returns `false` when it
/// already was (a redelivery or a replay): the caller then skips the effect
/// and acknowledges.
pub async fn claim(conn: &mut PgConnection, consumer: &str, event: &IncomingEvent) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, event_id, event_type, subject)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event.event_id)
    .bind(&event.event_type)
    .bind(&event.subject)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}
