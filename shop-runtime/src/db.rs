//! PostgreSQL pool and migrations.

use std::time::Duration;

use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};

/// Connects with a bounded wait, so a dead database is reported quickly.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
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
