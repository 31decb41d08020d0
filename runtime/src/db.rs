//! PostgreSQL pool and migrations.

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// How long one statement may run, and wait for a lock, before PostgreSQL
/// cancels it: a hung query or a lock held by a stuck transaction becomes an
/// error (retried like any other) instead of a connection pinned for good.
/// And how long a transaction may sit idle: one its client stalled in (a
/// paused process, a lost network) is ended by the server, releasing the
/// row locks every other writer of those rows would wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `statement_timeout`.
    pub statement: Duration,
    /// `lock_timeout`.
    pub lock: Duration,
    /// `idle_in_transaction_session_timeout`. Longer than any wait inside a
    /// transaction (svc-notify hands an email over under its row lock, with
    /// a 10 s SMTP timeout).
    pub idle_in_transaction: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            statement: Duration::from_secs(10),
            lock: Duration::from_secs(5),
            idle_in_transaction: Duration::from_secs(30),
        }
    }
}

/// Connects with a bounded wait, so a dead database is reported quickly,
/// and with `limits` on every connection.
pub async fn connect(url: &str, max_connections: u32, limits: Limits) -> Result<PgPool, sqlx::Error> {
    let millis = |d: Duration| d.as_millis().max(1).to_string();
    let options = PgConnectOptions::from_str(url)?.options([
        ("statement_timeout", millis(limits.statement)),
        ("lock_timeout", millis(limits.lock)),
        (
            "idle_in_transaction_session_timeout",
            millis(limits.idle_in_transaction),
        ),
    ]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// Applies the messaging tables (`outbox`, `inbox`) shared by every service,
/// then the service's own migrations (pass `sqlx::migrate!()`). Both sets
/// share `_sqlx_migrations`, so each ignores the other's versions.
pub async fn migrate(pool: &PgPool, mut service: Migrator) -> Result<(), sqlx::migrate::MigrateError> {
    let mut messaging = sqlx::migrate!("./migrations");
    messaging.set_ignore_missing(true).run(pool).await?;
    service.set_ignore_missing(true).run(pool).await
}
