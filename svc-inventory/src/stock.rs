//! Stock and reservations in Postgres: stock levels and restocking, and
//! reserve / commit / release of an order's lines.
//!
//! Lock order, everywhere: the reservation row first, then the stock rows of
//! its SKUs in SKU order (`ORDER BY sku FOR UPDATE`). One order means no
//! deadlock between concurrent reservations, commits and releases.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shop_runtime::values::{Quantity, Sku};
use sqlx::{PgConnection, PgPool};

/// A SKU's units: `on_hand`, of which `reserved` are held for orders.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StockLevel {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
}

/// One line to reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// A line that could not be reserved, with what was available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub sku: String,
    pub requested: i32,
    pub available: i64,
}

#[derive(Debug)]
pub enum Reservation {
    Held {
        expires_at: DateTime<Utc>,
    },
    Rejected(Vec<Shortage>),
    /// This order was already decided (redelivery, replay, or cancelled first).
    AlreadyKnown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    Expired,
    PaymentFailed,
    OrderCancelled,
}

impl ReleaseReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::PaymentFailed => "payment_failed",
            Self::OrderCancelled => "order_cancelled",
        }
    }
}

/// What a commit or release changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Units moved; `user_id` is the reservation's owner.
    Done { user_id: String },
    /// Nothing to do in the reservation's current state.
    Unchanged,
    /// No reservation for this order (yet).
    Missing,
}

/// Holds every line or none. `lines` must have distinct SKUs.
pub async fn reserve(
    conn: &mut PgConnection,
    order_id: &str,
    user_id: &str,
    lines: &[Line],
    ttl: Duration,
) -> Result<Reservation, sqlx::Error> {
    // Claim the order first: a concurrent duplicate waits here, then sees
    // the row and stops.
    let expires_at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "INSERT INTO reservations (order_id, user_id, status, expires_at)
         VALUES ($1, $2, 'held', now() + make_interval(secs => $3))
         ON CONFLICT (order_id) DO NOTHING
         RETURNING expires_at",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(ttl.as_secs_f64())
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    let Some(expires_at) = expires_at else {
        return Ok(Reservation::AlreadyKnown);
    };

    let mut sorted: Vec<&Line> = lines.iter().collect();
    sorted.sort_by(|a, b| a.sku.cmp(&b.sku));
    let skus: Vec<&str> = sorted.iter().map(|l| l.sku.as_str()).collect();
    let quantities: Vec<i32> = sorted.iter().map(|l| l.quantity.get()).collect();
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT sku, on_hand, reserved FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE")
            .bind(&skus)
            .fetch_all(&mut *conn)
            .await?;

    let shortages: Vec<Shortage> = sorted
        .iter()
        .filter_map(|line| {
            let available = rows
                .iter()
                .find(|(sku, _, _)| sku == line.sku.as_str())
                .map_or(0, |(_, on_hand, reserved)| on_hand - reserved);
            (available < i64::from(line.quantity.get())).then(|| Shortage {
                sku: line.sku.to_string(),
                requested: line.quantity.get(),
                available: available.max(0),
            })
        })
        .collect();
    if !shortages.is_empty() {
        sqlx::query(
            "UPDATE reservations SET status = 'rejected', expires_at = NULL, updated_at = now() WHERE order_id = $1",
        )
        .bind(order_id)
        .execute(&mut *conn)
        .await?;
        return Ok(Reservation::Rejected(shortages));
    }

    // The units held and the lines that hold them, in one round trip.
    sqlx::query(
        "WITH held AS (
             UPDATE stock SET reserved = stock.reserved + l.quantity, updated_at = now()
               FROM unnest($2::text[], $3::int[]) AS l(sku, quantity)
              WHERE stock.sku = l.sku)
         INSERT INTO reservation_lines (order_id, sku, quantity)
         SELECT $1, sku, quantity FROM unnest($2::text[], $3::int[]) AS l(sku, quantity)",
    )
    .bind(order_id)
    .bind(&skus)
    .bind(&quantities)
    .execute(&mut *conn)
    .await?;
    Ok(Reservation::Held { expires_at })
}

/// Locks the reservation row; returns its status and owner.
async fn lock_reservation(conn: &mut PgConnection, order_id: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT status, user_id FROM reservations WHERE order_id = $1 FOR UPDATE")
        .bind(order_id)
        .fetch_optional(conn)
        .await
}

/// Locks the stock rows of the reservation in SKU order and returns its lines.
async fn lock_lines(conn: &mut PgConnection, order_id: &str) -> Result<(Vec<String>, Vec<i32>), sqlx::Error> {
    // Rows are locked as they come out of the sort, so in SKU order.
    let lines: Vec<(String, i32)> = sqlx::query_as(
        "SELECT l.sku, l.quantity FROM reservation_lines l JOIN stock s ON s.sku = l.sku
          WHERE l.order_id = $1 ORDER BY l.sku FOR UPDATE OF s",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(lines.into_iter().unzip())
}

/// Payment succeeded: held units are sold.
pub async fn commit(conn: &mut PgConnection, order_id: &str) -> Result<Settlement, sqlx::Error> {
    let Some((status, user_id)) = lock_reservation(conn, order_id).await? else {
        return Ok(Settlement::Missing);
    };
    if status != "held" {
        return Ok(Settlement::Unchanged);
    }
    let (skus, quantities) = lock_lines(conn, order_id).await?;
    sqlx::query(
        "WITH sold AS (
             UPDATE stock SET on_hand = stock.on_hand - l.quantity, reserved = stock.reserved - l.quantity,
                              updated_at = now()
               FROM unnest($2::text[], $3::int[]) AS l(sku, quantity)
              WHERE stock.sku = l.sku)
         UPDATE reservations SET status = 'committed', updated_at = now() WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(&skus)
    .bind(&quantities)
    .execute(&mut *conn)
    .await?;
    Ok(Settlement::Done { user_id })
}

/// Gives the order's units back: held units leave `reserved`; sold units
/// return to `on_hand` when the order is cancelled after its payment went
/// through. An order never seen before gets a `released` tombstone, so an
/// `orders.placed` that arrives after its cancellation reserves nothing.
pub async fn release(
    conn: &mut PgConnection,
    order_id: &str,
    user_id: &str,
    reason: ReleaseReason,
) -> Result<Settlement, sqlx::Error> {
    let (status, owner) = loop {
        if let Some(found) = lock_reservation(conn, order_id).await? {
            break found;
        }
        if reason != ReleaseReason::OrderCancelled {
            return Ok(Settlement::Missing);
        }
        let tombstone = sqlx::query(
            "INSERT INTO reservations (order_id, user_id, status, release_reason)
             VALUES ($1, $2, 'released', $3) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(user_id)
        .bind(reason.as_str())
        .execute(&mut *conn)
        .await?;
        if tombstone.rows_affected() == 1 {
            return Ok(Settlement::Unchanged);
        }
        // The placement's reservation was committed while this insert
        // waited on it: release that one, or the cancellation is lost and
        // the units stay held until the reservation expires.
    };
    let update = match (status.as_str(), reason) {
        ("held", _) => {
            "UPDATE stock SET reserved = stock.reserved - l.quantity, updated_at = now()
                          FROM unnest($1::text[], $2::int[]) AS l(sku, quantity) WHERE stock.sku = l.sku"
        }
        ("committed", ReleaseReason::OrderCancelled) => {
            "UPDATE stock SET on_hand = stock.on_hand + l.quantity, updated_at = now()
               FROM unnest($1::text[], $2::int[]) AS l(sku, quantity) WHERE stock.sku = l.sku"
        }
        _ => return Ok(Settlement::Unchanged),
    };
    let (skus, quantities) = lock_lines(conn, order_id).await?;
    sqlx::query(update)
        .bind(&skus)
        .bind(&quantities)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE reservations SET status = 'released', release_reason = $2, updated_at = now() WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(reason.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(Settlement::Done { user_id: owner })
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
