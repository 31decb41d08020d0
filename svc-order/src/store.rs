//! Orders in Postgres.

use chrono::{DateTime, Utc};
use shop_runtime::values::Currency;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{NextActionUrl, PlaceOrder, PricedOrder, Status};

#[derive(Debug, Clone)]
pub struct OrderRecord {
    pub order_id: Uuid,
    pub user_id: String,
    pub status: Status,
    pub lines: Vec<StoredLine>,
    pub total_minor: i64,
    pub currency: String,
    pub payment_method: String,
    pub request_fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Where the customer authenticates the payment, while the order is
    /// `Reserved(Some(CustomerAction))`.
    pub next_action_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StoredLine {
    pub order_id: Uuid,
    pub sku: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    order_id: Uuid,
    user_id: String,
    status: String,
    cancel_reason: Option<String>,
    payment_wait: Option<String>,
    next_action_url: Option<String>,
    total_minor: i64,
    currency: String,
    payment_method: String,
    request_fingerprint: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The lines, in order; `NULL` when there are none.
    skus: Option<Vec<String>>,
    quantities: Option<Vec<i32>>,
    prices: Option<Vec<i64>>,
}

/// `SELECT <order columns and lines> <rest>` as one literal (sqlx wants
/// static SQL). An order and its lines come in one statement: the lines as
/// arrays in line order.
macro_rules! select_orders {
    ($rest:literal) => {
        concat!(
            "SELECT order_id, user_id, status, cancel_reason, payment_wait, next_action_url, total_minor, ",
            "currency, payment_method, request_fingerprint, created_at, updated_at, ",
            "lines.skus, lines.quantities, lines.prices ",
            "FROM orders CROSS JOIN LATERAL (",
            "SELECT array_agg(sku ORDER BY line_no) AS skus, array_agg(quantity ORDER BY line_no) AS quantities, ",
            "array_agg(unit_price_minor ORDER BY line_no) AS prices ",
            "FROM order_lines WHERE order_lines.order_id = orders.order_id) lines ",
            $rest
        )
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("order {0} has an unknown status in the database")]
    CorruptStatus(Uuid),
    #[error("order {0}'s lines do not line up in the database")]
    CorruptLines(Uuid),
    #[error("staging an event: {0}")]
    Outbox(#[from] shop_runtime::outbox::OutboxError),
}

fn status_of(row: &OrderRow) -> Result<Status, StoreError> {
    Status::from_columns(&row.status, row.cancel_reason.as_deref(), row.payment_wait.as_deref())
        .ok_or(StoreError::CorruptStatus(row.order_id))
}

impl TryFrom<OrderRow> for OrderRecord {
    type Error = StoreError;

    fn try_from(mut row: OrderRow) -> Result<Self, StoreError> {
        let skus = row.skus.take().unwrap_or_default();
        let quantities = row.quantities.take().unwrap_or_default();
        let prices = row.prices.take().unwrap_or_default();
        if quantities.len() != skus.len() || prices.len() != skus.len() {
            return Err(StoreError::CorruptLines(row.order_id));
        }
        let lines = skus
            .into_iter()
            .zip(quantities)
            .zip(prices)
            .map(|((sku, quantity), unit_price_minor)| StoredLine {
                order_id: row.order_id,
                sku,
                quantity,
                unit_price_minor,
            })
            .collect();
        Ok(OrderRecord {
            status: status_of(&row)?,
            lines,
            order_id: row.order_id,
            user_id: row.user_id,
            total_minor: row.total_minor,
            currency: row.currency,
            payment_method: row.payment_method,
            request_fingerprint: row.request_fingerprint,
            created_at: row.created_at,
            updated_at: row.updated_at,
            next_action_url: row.next_action_url,
        })
    }
}

pub async fn load(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<OrderRecord>, StoreError> {
    let row: Option<OrderRow> = sqlx::query_as(select_orders!("WHERE order_id = $1"))
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(OrderRecord::try_from).transpose()
}

pub async fn find_by_key(pool: &PgPool, user_id: &str, key: &str) -> Result<Option<OrderRecord>, StoreError> {
    let mut conn = pool.acquire().await?;
    let row: Option<OrderRow> = sqlx::query_as(select_orders!("WHERE user_id = $1 AND idempotency_key = $2"))
        .bind(user_id)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(OrderRecord::try_from).transpose()
}

/// Inserts a new pending order and returns it as stored. `None` when the
/// user already has an order with this idempotency key (a concurrent retry
/// won the race).
pub async fn insert(
    conn: &mut PgConnection,
    user_id: &str,
    command: &PlaceOrder,
    priced: &PricedOrder,
) -> Result<Option<OrderRecord>, StoreError> {
    let (lines, total) = (&priced.lines, priced.total);
    let order_id = Uuid::now_v7();
    let fingerprint = command.fingerprint();
    let line_no: Vec<i32> = (0..).take(lines.len()).collect();
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let quantities: Vec<i32> = lines.iter().map(|l| l.quantity.get()).collect();
    let prices: Vec<i64> = lines.iter().map(|l| l.unit_price.minor).collect();
    // The order and its lines in one round trip; no lines when a retry
    // with the same key got there first.
    let inserted: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "WITH placed AS (
             INSERT INTO orders (order_id, user_id, idempotency_key, request_fingerprint, status, payment_method,
                                 total_minor, currency)
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)
             ON CONFLICT ON CONSTRAINT orders_idempotency_key_unique DO NOTHING
             RETURNING order_id, created_at, updated_at),
         lines AS (
             INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor)
             SELECT placed.order_id, l.* FROM placed, unnest($8::int[], $9::text[], $10::int[], $11::bigint[]) AS l)
         SELECT created_at, updated_at FROM placed",
    )
    .bind(order_id)
    .bind(user_id)
    .bind(command.key.as_str())
    .bind(&fingerprint)
    .bind(command.payment_method.as_str())
    .bind(total.minor)
    .bind(total.currency.as_str())
    .bind(&line_no)
    .bind(&skus)
    .bind(&quantities)
    .bind(&prices)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((created_at, updated_at)) = inserted else {
        return Ok(None);
    };
    // What was written, without reading it back.
    Ok(Some(OrderRecord {
        order_id,
        user_id: user_id.to_owned(),
        status: Status::Pending,
        lines: lines
            .iter()
            .map(|line| StoredLine {
                order_id,
                sku: line.sku.to_string(),
                quantity: line.quantity.get(),
                unit_price_minor: line.unit_price.minor,
            })
            .collect(),
        total_minor: total.minor,
        currency: total.currency.as_str().to_owned(),
        payment_method: command.payment_method.as_str().to_owned(),
        request_fingerprint: fingerprint,
        created_at,
        updated_at,
        next_action_url: None,
    }))
}

/// What a status change needs of an order, read under its row lock.
#[derive(Debug, Clone)]
pub struct Locked {
    pub status: Status,
    pub user_id: String,
    pub total_minor: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

/// The order's status and what its events carry, locked until the
/// transaction ends.
pub async fn lock(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Locked>, StoreError> {
    type Row = (
        String,
        Option<String>,
        Option<String>,
        String,
        i64,
        String,
        DateTime<Utc>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT status, cancel_reason, payment_wait, user_id, total_minor, currency, created_at
           FROM orders WHERE order_id = $1 FOR UPDATE",
    )
    .bind(order_id)
    .fetch_optional(conn)
    .await?;
    row.map(|(status, reason, wait, user_id, total_minor, currency, created_at)| {
        Status::from_columns(&status, reason.as_deref(), wait.as_deref())
            .map(|status| Locked {
                status,
                user_id,
                total_minor,
                currency,
                created_at,
            })
            .ok_or(StoreError::CorruptStatus(order_id))
    })
    .transpose()
}

/// Sets the status of a locked order, and where its customer authenticates
/// the payment (`Some` exactly when the status is
/// `Reserved(Some(CustomerAction))`); returns its new `updated_at`.
pub async fn set_status(
    conn: &mut PgConnection,
    order_id: Uuid,
    status: Status,
    next_action_url: Option<&NextActionUrl>,
) -> Result<DateTime<Utc>, StoreError> {
    let (status, reason, wait) = status.to_columns();
    Ok(sqlx::query_scalar(
        "UPDATE orders
            SET status = $2, cancel_reason = $3, payment_wait = $4, next_action_url = $5,
                updated_at = clock_timestamp()
          WHERE order_id = $1
         RETURNING updated_at",
    )
    .bind(order_id)
    .bind(status)
    .bind(reason)
    .bind(wait)
    .bind(next_action_url.map(NextActionUrl::as_str))
    .fetch_one(conn)
    .await?)
}

/// Up to `limit` orders still pending or reserved `deadline` after they
/// were placed, oldest first.
pub async fn overdue(pool: &PgPool, deadline: std::time::Duration, limit: i64) -> Result<Vec<Uuid>, StoreError> {
    let deadline_ms = i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX);
    Ok(sqlx::query_scalar(
        "SELECT order_id FROM orders
          WHERE status IN ('pending', 'reserved')
            AND created_at < clock_timestamp() - make_interval(secs => $1::double precision / 1000)
          ORDER BY created_at
          LIMIT $2",
    )
    .bind(deadline_ms)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// A position in a newest-first listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub order_id: Uuid,
}

/// Orders of `user_id` (all users when `None`), newest first, after `cursor`.
pub async fn list(
    pool: &PgPool,
    user_id: Option<&str>,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<OrderRecord>, StoreError> {
    let mut conn = pool.acquire().await?;
    let rows: Vec<OrderRow> = sqlx::query_as(select_orders!(
        "WHERE ($1::text IS NULL OR user_id = $1)
           AND ($2::timestamptz IS NULL OR (created_at, order_id) < ($2, $3))
         ORDER BY created_at DESC, order_id DESC
         LIMIT $4"
    ))
    .bind(user_id)
    .bind(cursor.map(|c| c.created_at))
    .bind(cursor.map(|c| c.order_id))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(OrderRecord::try_from).collect()
}

pub fn currency(code: &str) -> Option<Currency> {
    Currency::parse(code).ok()
}
