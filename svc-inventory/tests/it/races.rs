//! Reservation races against a real PostgreSQL, with two transactions
//! interleaved by hand.

use std::time::Duration;

use shop_infra::fresh_database;
use shop_runtime::{
    db,
    values::{Quantity, Sku},
};
use svc_inventory::{
    domain::{Line, ReleaseReason, Trigger},
    saga::{Applied, apply},
};

/// A cancellation handled while the order's placement is reserving (its
/// reservation inserted but not committed) must release that reservation
/// once it commits, not leave it held until it expires.
#[tokio::test]
async fn a_cancellation_racing_the_reservation_releases_it() -> anyhow::Result<()> {
    let pool = db::connect(&fresh_database().await?, 4, db::Limits::default()).await?;
    db::migrate(&pool, sqlx::migrate!("./migrations")).await?;
    let lines = [Line {
        sku: Sku::parse("SKU-MUG-001").map_err(anyhow::Error::msg)?,
        quantity: Quantity::new(2).map_err(anyhow::Error::msg)?,
    }];

    let mut placing = pool.begin().await?;
    let ttl = Duration::from_secs(900);
    let held = apply(&mut placing, "o-1", "u", Trigger::Placed, &lines, ttl).await?;
    assert!(matches!(held, Applied::Reserved { .. }), "{held:?}");

    // The cancellation finds no committed reservation and waits on the
    // placement's row.
    let cancelling = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await?;
            let cancelled = Trigger::Release(ReleaseReason::OrderCancelled);
            let settled = apply(&mut tx, "o-1", "u", cancelled, &[], ttl).await?;
            tx.commit().await?;
            anyhow::Ok(settled)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    placing.commit().await?;
    cancelling.await??;

    let status: String = sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = 'o-1'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(status, "released", "the cancellation must not be lost");
    let reserved: i64 = sqlx::query_scalar("SELECT reserved FROM stock WHERE sku = 'SKU-MUG-001'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(reserved, 0, "no unit stays held for a cancelled order");
    Ok(())
}
