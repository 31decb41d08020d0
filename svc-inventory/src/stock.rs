//! Stock and reservations in Postgres: stock levels and restocking, the
//! writes that apply [`crate::domain`]'s decisions to an order's
//! reservation (see [`crate::saga::apply`]), and a refund's units taken
//! back (see [`crate::saga::take_back`]).
//!
//! Lock order, everywhere: the reservation row first, then the stock rows of
//! its SKUs in SKU order (`ORDER BY sku FOR UPDATE`). One order means no
//! deadlock between concurrent reservations, commits and releases.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use shop_runtime::values::Sku;
use sqlx::{PgConnection, PgPool};

use crate::domain::{Line, Movement, ReleaseReason, Sold, Status, Units};

/// A SKU's units: `on_hand`, of which `reserved` are held for orders.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StockLevel {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
}

/// A reservation as [`lock`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub status: Status,
    pub user_id: String,
}

/// Locks the order's reservation row, if there is one.
pub async fn lock(conn: &mut PgConnection, order_id: &str) -> Result<Option<Found>, sqlx::Error> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT status, user_id FROM reservations WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(conn)
            .await?;
    row.map(|(status, user_id)| {
        let status = Status::from_column(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("reservation {order_id} has status {status:?}").into()))?;
        Ok(Found { status, user_id })
    })
    .transpose()
}

/// Inserts the order's reservation, held until `ttl` from now, unless one
/// exists: then `None`. A concurrent placement of the same order waits here
/// for this one's transaction, then finds its row.
pub async fn claim(
    conn: &mut PgConnection,
    order_id: &str,
    user_id: &str,
    ttl: Duration,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    Ok(sqlx::query_scalar(
        "INSERT INTO reservations (order_id, user_id, status, expires_at)
         VALUES ($1, $2, 'held', now() + make_interval(secs => $3))
         ON CONFLICT (order_id) DO NOTHING
         RETURNING expires_at",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(ttl.as_secs_f64())
    .fetch_optional(conn)
    .await?
    .flatten())
}

/// Locks the stock rows of `lines` in SKU order and returns their units.
pub async fn lock_units(conn: &mut PgConnection, lines: &[Line]) -> Result<BTreeMap<String, Units>, sqlx::Error> {
    let mut skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    skus.sort_unstable();
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT sku, on_hand, reserved FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE")
            .bind(&skus)
            .fetch_all(conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(sku, on_hand, reserved)| (sku, Units { on_hand, reserved }))
        .collect())
}

/// Holds `lines` (whose stock rows the caller locked) for the claimed
/// reservation, and records them as its lines, in one round trip.
pub async fn hold(conn: &mut PgConnection, order_id: &str, lines: &[Line]) -> Result<(), sqlx::Error> {
    let (skus, quantities): (Vec<&str>, Vec<i32>) = lines.iter().map(|l| (l.sku.as_str(), l.quantity.get())).unzip();
    let (on_hand, reserved) = Movement::Hold.per_unit();
    sqlx::query(
        "WITH held AS (
             UPDATE stock SET on_hand = stock.on_hand + $4 * l.quantity,
                              reserved = stock.reserved + $5 * l.quantity, updated_at = now()
               FROM unnest($2::text[], $3::int[]) AS l(sku, quantity)
              WHERE stock.sku = l.sku)
         INSERT INTO reservation_lines (order_id, sku, quantity)
         SELECT $1, sku, quantity FROM unnest($2::text[], $3::int[]) AS l(sku, quantity)",
    )
    .bind(order_id)
    .bind(&skus)
    .bind(&quantities)
    .bind(on_hand)
    .bind(reserved)
    .execute(conn)
    .await?;
    Ok(())
}

/// The claimed reservation is rejected: it holds nothing.
pub async fn reject(conn: &mut PgConnection, order_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE reservations SET status = $2, expires_at = NULL, updated_at = now() WHERE order_id = $1")
        .bind(order_id)
        .bind(Status::Rejected.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves the locked reservation to `to` and its units as `units` says,
/// locking their stock rows in SKU order first. `reason` is recorded with a
/// release. The units that move are those still sold: a line's `quantity`
/// less what refunds already took back.
pub async fn settle(
    conn: &mut PgConnection,
    order_id: &str,
    to: Status,
    units: Option<Movement>,
    reason: Option<ReleaseReason>,
) -> Result<(), sqlx::Error> {
    if let Some(movement) = units {
        let lines = lock_lines(conn, order_id).await?;
        let (skus, quantities): (Vec<String>, Vec<i32>) = lines
            .into_iter()
            .map(|(sku, sold)| (sku, sold.quantity - sold.returned))
            .unzip();
        move_units(conn, &skus, &quantities, movement).await?;
    }
    sqlx::query(
        "UPDATE reservations SET status = $2, release_reason = COALESCE($3, release_reason), updated_at = now()
          WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(to.as_str())
    .bind(reason.map(ReleaseReason::as_str))
    .execute(conn)
    .await?;
    Ok(())
}

/// The lines of the order's reservation, by SKU, with the stock rows of
/// their SKUs locked in SKU order.
pub async fn lock_lines(conn: &mut PgConnection, order_id: &str) -> Result<BTreeMap<String, Sold>, sqlx::Error> {
    // Rows are locked as they come out of the sort, so in SKU order.
    let lines: Vec<(String, i32, i32)> = sqlx::query_as(
        "SELECT l.sku, l.quantity, l.returned FROM reservation_lines l JOIN stock s ON s.sku = l.sku
          WHERE l.order_id = $1 ORDER BY l.sku FOR UPDATE OF s",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await?;
    Ok(lines
        .into_iter()
        .map(|(sku, quantity, returned)| (sku, Sold { quantity, returned }))
        .collect())
}

/// Moves `quantities[i]` units of `skus[i]` as `movement` says, in stock
/// rows the caller locked.
async fn move_units(
    conn: &mut PgConnection,
    skus: &[String],
    quantities: &[i32],
    movement: Movement,
) -> Result<(), sqlx::Error> {
    let (on_hand, reserved) = movement.per_unit();
    sqlx::query(
        "UPDATE stock SET on_hand = stock.on_hand + $3 * l.quantity,
                          reserved = stock.reserved + $4 * l.quantity, updated_at = now()
           FROM unnest($1::text[], $2::int[]) AS l(sku, quantity) WHERE stock.sku = l.sku",
    )
    .bind(skus)
    .bind(quantities)
    .bind(on_hand)
    .bind(reserved)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the refund's units already went back in stock.
pub async fn returned_before(conn: &mut PgConnection, refund_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM returns WHERE refund_id = $1)")
        .bind(refund_id)
        .fetch_one(conn)
        .await
}

/// Puts a refund's `lines` of the locked, committed reservation back on
/// hand (their stock rows locked by [`lock_lines`]), counts them returned
/// on the order's lines, and records the refund as restocked.
pub async fn take_back(
    conn: &mut PgConnection,
    order_id: &str,
    refund_id: &str,
    lines: &[Line],
) -> Result<(), sqlx::Error> {
    let (skus, quantities): (Vec<String>, Vec<i32>) =
        lines.iter().map(|l| (l.sku.to_string(), l.quantity.get())).unzip();
    sqlx::query(
        "WITH returned AS (
             UPDATE reservation_lines SET returned = reservation_lines.returned + l.quantity
               FROM unnest($3::text[], $4::int[]) AS l(sku, quantity)
              WHERE reservation_lines.order_id = $2 AND reservation_lines.sku = l.sku)
         INSERT INTO returns (refund_id, order_id) VALUES ($1, $2)",
    )
    .bind(refund_id)
    .bind(order_id)
    .bind(&skus)
    .bind(&quantities)
    .execute(&mut *conn)
    .await?;
    move_units(conn, &skus, &quantities, Movement::Return).await
}

/// Inserts a released tombstone for an order never seen, unless a
/// reservation appeared meanwhile (then `false`: decide again).
pub async fn tombstone(
    conn: &mut PgConnection,
    order_id: &str,
    user_id: &str,
    reason: ReleaseReason,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO reservations (order_id, user_id, status, release_reason)
         VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(Status::Released.as_str())
    .bind(reason.as_str())
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Claims the held reservation longest past its deadline, other than those
/// in `skip`, passing over rows another sweeper (replica) holds.
pub async fn claim_expired(conn: &mut PgConnection, skip: &[String]) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT order_id, user_id FROM reservations
          WHERE status = 'held' AND expires_at < now() AND order_id <> ALL($1)
          ORDER BY expires_at
          LIMIT 1
            FOR UPDATE SKIP LOCKED",
    )
    .bind(skip)
    .fetch_optional(conn)
    .await
}

pub async fn level(pool: &PgPool, sku: &Sku) -> Result<Option<StockLevel>, sqlx::Error> {
    sqlx::query_as("SELECT sku, on_hand, reserved FROM stock WHERE sku = $1")
        .bind(sku.as_str())
        .fetch_optional(pool)
        .await
}

/// Adds `quantity` units to `on_hand`; `None` when the SKU has no stock row.
pub async fn restock(pool: &PgPool, sku: &Sku, quantity: i64) -> Result<Option<StockLevel>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE stock SET on_hand = on_hand + $2, updated_at = now() WHERE sku = $1
         RETURNING sku, on_hand, reserved",
    )
    .bind(sku.as_str())
    .bind(quantity)
    .fetch_optional(pool)
    .await
}
