//! The limits every service connection carries, against a real PostgreSQL:
//! a statement stuck behind a lock or running away ends in an error (which
//! the caller retries) instead of pinning a connection for good, and a
//! transaction its client stalled in ends, releasing its locks.

use std::time::{Duration, Instant};

use shop_infra::fresh_database;
use shop_runtime::db;
use sqlx::{PgPool, Postgres, Transaction};

fn short() -> db::Limits {
    db::Limits {
        statement: Duration::from_millis(500),
        lock: Duration::from_millis(200),
        idle_in_transaction: Duration::from_millis(300),
    }
}

/// A pool with [`short`] limits on a fresh database with one row, and a
/// transaction that holds that row and goes nowhere (its process hung).
async fn a_row_held_by_a_stuck_transaction() -> anyhow::Result<(PgPool, Transaction<'static, Postgres>)> {
    let pool = db::connect(&fresh_database().await?, 4, short()).await?;
    sqlx::query("CREATE TABLE t (id int PRIMARY KEY)")
        .execute(&pool)
        .await?;
    sqlx::query("INSERT INTO t VALUES (1)").execute(&pool).await?;
    let mut stuck = pool.begin().await?;
    sqlx::query("SELECT id FROM t WHERE id = 1 FOR UPDATE")
        .execute(&mut *stuck)
        .await?;
    Ok((pool, stuck))
}

#[tokio::test]
async fn a_statement_waiting_on_a_stuck_lock_gives_up() -> anyhow::Result<()> {
    let (pool, stuck) = a_row_held_by_a_stuck_transaction().await?;

    let started = Instant::now();
    let waiting = sqlx::query("UPDATE t SET id = 1 WHERE id = 1").execute(&pool);
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    let Ok(Err(sqlx::Error::Database(e))) = outcome else {
        panic!("expected a lock timeout, got {outcome:?} after {:?}", started.elapsed());
    };
    assert_eq!(e.code().as_deref(), Some("55P03"), "lock_not_available: {e}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    stuck.rollback().await?;
    Ok(())
}

#[tokio::test]
async fn a_runaway_statement_is_cancelled() -> anyhow::Result<()> {
    let pool = db::connect(&fresh_database().await?, 4, short()).await?;
    let outcome = tokio::time::timeout(Duration::from_secs(5), sqlx::query("SELECT pg_sleep(3)").execute(&pool)).await;
    let Ok(Err(sqlx::Error::Database(e))) = outcome else {
        panic!("expected a statement timeout, got {outcome:?}");
    };
    assert_eq!(e.code().as_deref(), Some("57014"), "query_canceled: {e}");
    Ok(())
}

#[tokio::test]
async fn a_transaction_left_idle_ends_and_lets_go_of_its_locks() -> anyhow::Result<()> {
    // Its client stalls (paused, cut off) holding the row.
    let (pool, mut stalled) = a_row_held_by_a_stuck_transaction().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The server ended it: another writer gets the row, and the stalled
    // client learns its transaction is gone.
    sqlx::query("UPDATE t SET id = 1 WHERE id = 1").execute(&pool).await?;
    let late = sqlx::query("UPDATE t SET id = 1 WHERE id = 1")
        .execute(&mut *stalled)
        .await;
    assert!(
        late.is_err(),
        "the stalled transaction's connection was closed: {late:?}"
    );
    Ok(())
}
