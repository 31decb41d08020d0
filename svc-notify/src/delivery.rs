//! Sending stored notifications, at least once.
//!
//! The event handler commits the notification first and sends it right
//! after ([`Delivery::deliver`]). A failed send, or a crash between commit
//! and send, leaves `sent_at` NULL; the resend loop
//! ([`Delivery::resend_until`]) picks such rows up when they are due. Every
//! attempt holds the row with `FOR UPDATE SKIP LOCKED` while it sends, so
//! the handler, the loop and other replicas never send the same row at the
//! same time. What remains is a crash after the sender accepted the email
//! and before `sent_at` was committed; the resend then reuses the same file
//! name or Message-ID.

use std::{sync::Arc, time::Duration};

use shop_runtime::CancellationToken;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    sender::Sender,
    store::{self, Unsent},
};

/// Longest wait between attempts at one unsent email.
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// Most emails sent in one pass of the resend loop, so shutdown is noticed
/// during a long backlog.
const PASS_LIMIT: usize = 100;

#[derive(Clone)]
pub struct Delivery {
    pub pool: PgPool,
    pub sender: Arc<Sender>,
    /// Pause between passes of the resend loop; also the first back-off.
    pub resend_interval: Duration,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Sent,
    Failed,
    /// Sent already, or another instance holds it right now.
    NotMine,
}

impl Delivery {
    /// Sends one freshly committed notification.
    pub async fn deliver(&self, notification_id: Uuid) -> Result<Attempt, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let Some(unsent) = store::lock_unsent(&mut tx, notification_id).await? else {
            return Ok(Attempt::NotMine);
        };
        let attempt = self.attempt(&mut tx, unsent).await?;
        tx.commit().await?;
        Ok(attempt)
    }

    /// Sends due notifications one at a time, each in its own transaction,
    /// so a crash mid-pass repeats at most one. Returns how many went out.
    pub async fn resend_due(&self) -> Result<usize, sqlx::Error> {
        let mut sent = 0;
        for _ in 0..PASS_LIMIT {
            let mut tx = self.pool.begin().await?;
            let Some(unsent) = store::lock_next_due(&mut tx).await? else {
                break;
            };
            if self.attempt(&mut tx, unsent).await? == Attempt::Sent {
                sent += 1;
            }
            tx.commit().await?;
        }
        Ok(sent)
    }

    /// Runs [`Self::resend_due`] every `resend_interval` until `shutdown`.
    pub async fn resend_until(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.resend_interval) => {}
            }
            match self.resend_due().await {
                Ok(0) => {}
                Ok(sent) => tracing::info!(sent, "resent pending emails"),
                Err(e) => tracing::warn!(error = %e, "resend pass failed; will retry"),
            }
        }
    }

    async fn attempt(&self, conn: &mut PgConnection, unsent: Unsent) -> Result<Attempt, sqlx::Error> {
        let id = unsent.email.notification_id;
        match self.sender.send(&unsent.email).await {
            Ok(()) => {
                store::mark_sent(conn, id).await?;
                tracing::info!(notification_id = %id, recipient = %unsent.email.recipient, "email sent");
                Ok(Attempt::Sent)
            }
            Err(e) => {
                let attempts = unsent.attempts.saturating_add(1);
                let retry_after = backoff(self.resend_interval, attempts);
                tracing::warn!(notification_id = %id, attempts, ?retry_after, error = %e, "email not sent; will retry");
                store::mark_failed(conn, id, &e.to_string(), retry_after).await?;
                Ok(Attempt::Failed)
            }
        }
    }
}

/// `base` after the first failure, doubling with each further one, at most
/// `MAX_BACKOFF`: a relay that is down for an hour is not hammered.
pub fn backoff(base: Duration, attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(16);
    base.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 0), base);
        assert_eq!(backoff(base, 1), base);
        assert_eq!(backoff(base, 2), Duration::from_secs(10));
        assert_eq!(backoff(base, 4), Duration::from_secs(40));
        assert_eq!(backoff(base, 10), MAX_BACKOFF);
        assert_eq!(backoff(base, i32::MAX), MAX_BACKOFF);
    }
}
