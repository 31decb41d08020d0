//! The reservation sweeper against a real PostgreSQL: each expired
//! reservation is released on its own, so one that cannot be released holds
//! up no other.

use std::time::Duration;

use shop_infra::fresh_database;
use shop_runtime::{db, outbox::Outbox};
use svc_inventory::saga::{InventorySaga, sweep_once};

#[tokio::test]
async fn a_reservation_that_cannot_be_released_holds_up_no_other() -> anyhow::Result<()> {
    let pool = db::connect(&fresh_database().await?, 4, db::Limits::default()).await?;
    db::migrate(&pool, sqlx::migrate!("./migrations")).await?;
    // Two expired reservations. The older one is damaged: its units were
    // never counted as reserved, so giving them back would take `reserved`
    // below zero, which the stock table refuses. It is swept first.
    sqlx::raw_sql(
        "INSERT INTO reservations (order_id, user_id, status, expires_at) VALUES
             ('o-damaged', 'u', 'held', now() - interval '2 minutes'),
             ('o-healthy', 'u', 'held', now() - interval '1 minute');
         INSERT INTO reservation_lines (order_id, sku, quantity) VALUES
             ('o-damaged', 'SKU-MUG-001', 5),
             ('o-healthy', 'SKU-TEE-001', 2);
         UPDATE stock SET reserved = 2 WHERE sku = 'SKU-TEE-001';",
    )
    .execute(&pool)
    .await?;
    let saga = InventorySaga {
        pool: pool.clone(),
        outbox: Outbox::new("svc-inventory"),
        reservation_ttl: Duration::from_secs(900),
        consumer: "inventory-orders",
    };

    let _ = sweep_once(&saga).await;

    let status = |order: &'static str| {
        sqlx::query_scalar::<_, String>("SELECT status FROM reservations WHERE order_id = $1")
            .bind(order)
            .fetch_one(&pool)
    };
    assert_eq!(status("o-healthy").await?, "released");
    assert_eq!(
        status("o-damaged").await?,
        "held",
        "left for an operator, not half released"
    );
    let reserved: i64 = sqlx::query_scalar("SELECT reserved FROM stock WHERE sku = 'SKU-TEE-001'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(reserved, 0);
    Ok(())
}
