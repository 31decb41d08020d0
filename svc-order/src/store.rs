//! Orders and their refunds in Postgres.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shop_runtime::values::{Currency, Money, Quantity, Sku};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    domain::{NextActionUrl, PlaceOrder, PricedLine, PricedOrder, Status},
    refunds::{PlannedRefund, Refund, RefundRequest, RefundStatus, Refundable},
};

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
    /// Its refunds, oldest first.
    pub refunds: Vec<RefundRecord>,
}

/// A refund of an order, as stored.
#[derive(Debug, Clone)]
pub struct RefundRecord {
    pub refund_id: Uuid,
    pub order_id: Uuid,
    pub idempotency_key: String,
    pub request_fingerprint: String,
    pub status: RefundStatus,
    pub amount_minor: i64,
    pub currency: String,
    /// What it gives back, at the prices the order was paid at.
    pub lines: Vec<StoredLine>,
    pub restock: bool,
    /// Why it failed, when it did.
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
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
    #[error("refund {0} is not one svc-order could have written")]
    CorruptRefund(Uuid),
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
        let lines = stored_lines(row.order_id, row.skus.take(), row.quantities.take(), row.prices.take())
            .ok_or(StoreError::CorruptLines(row.order_id))?;
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
            refunds: Vec::new(),
        })
    }
}

/// Lines aggregated as arrays in line order (`NULL` when there are none)
/// as lines of `order_id`; `None` when the arrays do not line up.
fn stored_lines(
    order_id: Uuid,
    skus: Option<Vec<String>>,
    quantities: Option<Vec<i32>>,
    prices: Option<Vec<i64>>,
) -> Option<Vec<StoredLine>> {
    let (skus, quantities, prices) = (
        skus.unwrap_or_default(),
        quantities.unwrap_or_default(),
        prices.unwrap_or_default(),
    );
    if quantities.len() != skus.len() || prices.len() != skus.len() {
        return None;
    }
    let lines = skus
        .into_iter()
        .zip(quantities)
        .zip(prices)
        .map(|((sku, quantity), unit_price_minor)| StoredLine {
            order_id,
            sku,
            quantity,
            unit_price_minor,
        })
        .collect();
    Some(lines)
}

impl OrderRecord {
    /// The order as its refunds see it.
    pub fn refundable(&self) -> Result<Refundable, StoreError> {
        let currency = Currency::parse(&self.currency).map_err(|_| StoreError::CorruptLines(self.order_id))?;
        let priced = |lines: &[StoredLine]| {
            lines
                .iter()
                .map(|l| {
                    Some(PricedLine {
                        sku: Sku::parse(&l.sku).ok()?,
                        quantity: Quantity::new(l.quantity).ok()?,
                        unit_price: Money::new(currency, l.unit_price_minor),
                    })
                })
                .collect::<Option<Vec<_>>>()
        };
        let refunds = self
            .refunds
            .iter()
            .map(|r| {
                let corrupt = StoreError::CorruptRefund(r.refund_id);
                if r.currency != self.currency {
                    return Err(corrupt);
                }
                Ok(Refund {
                    refund_id: r.refund_id,
                    status: r.status,
                    lines: priced(&r.lines).ok_or(corrupt)?,
                    amount: Money::new(currency, r.amount_minor),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Refundable {
            status: self.status,
            lines: priced(&self.lines).ok_or(StoreError::CorruptLines(self.order_id))?,
            total: Money::new(currency, self.total_minor),
            refunds,
        })
    }
}

#[derive(sqlx::FromRow)]
struct RefundRow {
    refund_id: Uuid,
    order_id: Uuid,
    idempotency_key: String,
    request_fingerprint: String,
    status: String,
    amount_minor: i64,
    currency: String,
    restock: bool,
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    skus: Option<Vec<String>>,
    quantities: Option<Vec<i32>>,
    prices: Option<Vec<i64>>,
}

impl TryFrom<RefundRow> for RefundRecord {
    type Error = StoreError;

    fn try_from(row: RefundRow) -> Result<Self, StoreError> {
        let corrupt = StoreError::CorruptRefund(row.refund_id);
        let Some(status) = RefundStatus::from_column(&row.status) else {
            return Err(corrupt);
        };
        let lines = stored_lines(row.order_id, row.skus, row.quantities, row.prices).ok_or(corrupt)?;
        Ok(RefundRecord {
            refund_id: row.refund_id,
            order_id: row.order_id,
            idempotency_key: row.idempotency_key,
            request_fingerprint: row.request_fingerprint,
            status,
            amount_minor: row.amount_minor,
            currency: row.currency,
            lines,
            restock: row.restock,
            failure_reason: row.failure_reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Gives each of `orders` its refunds, oldest first, in one statement.
async fn with_refunds(conn: &mut PgConnection, orders: &mut [OrderRecord]) -> Result<(), StoreError> {
    if orders.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = orders.iter().map(|o| o.order_id).collect();
    let rows: Vec<RefundRow> = sqlx::query_as(
        "SELECT refund_id, order_id, idempotency_key, request_fingerprint, status, amount_minor, currency, restock,
                failure_reason, created_at, updated_at, lines.skus, lines.quantities, lines.prices
           FROM order_refunds CROSS JOIN LATERAL (
                SELECT array_agg(sku ORDER BY line_no) AS skus, array_agg(quantity ORDER BY line_no) AS quantities,
                       array_agg(unit_price_minor ORDER BY line_no) AS prices
                  FROM order_refund_lines WHERE order_refund_lines.refund_id = order_refunds.refund_id) lines
          WHERE order_id = ANY($1)
          ORDER BY order_id, created_at, refund_id",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_order: HashMap<Uuid, Vec<RefundRecord>> = HashMap::new();
    for row in rows {
        let refund = RefundRecord::try_from(row)?;
        by_order.entry(refund.order_id).or_default().push(refund);
    }
    for order in orders {
        order.refunds = by_order.remove(&order.order_id).unwrap_or_default();
    }
    Ok(())
}

/// One order, with its refunds.
async fn complete(conn: &mut PgConnection, row: Option<OrderRow>) -> Result<Option<OrderRecord>, StoreError> {
    let mut order: Vec<OrderRecord> = row.map(OrderRecord::try_from).transpose()?.into_iter().collect();
    with_refunds(conn, &mut order).await?;
    Ok(order.pop())
}

pub async fn load(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<OrderRecord>, StoreError> {
    let row: Option<OrderRow> = sqlx::query_as(select_orders!("WHERE order_id = $1"))
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    complete(conn, row).await
}

pub async fn find_by_key(pool: &PgPool, user_id: &str, key: &str) -> Result<Option<OrderRecord>, StoreError> {
    let mut conn = pool.acquire().await?;
    let row: Option<OrderRow> = sqlx::query_as(select_orders!("WHERE user_id = $1 AND idempotency_key = $2"))
        .bind(user_id)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    complete(&mut conn, row).await
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
        refunds: Vec::new(),
    }))
}

/// Records a pending refund of a locked order and returns it as stored.
/// The order's row lock is what keeps another refund from planning on the
/// same units meanwhile; the unique key is the backstop.
pub async fn insert_refund(
    conn: &mut PgConnection,
    order_id: Uuid,
    request: &RefundRequest,
    planned: &PlannedRefund,
) -> Result<RefundRecord, StoreError> {
    let refund_id = Uuid::now_v7();
    let fingerprint = request.fingerprint();
    let lines = &planned.lines;
    let line_no: Vec<i32> = (0..).take(lines.len()).collect();
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let quantities: Vec<i32> = lines.iter().map(|l| l.quantity.get()).collect();
    let prices: Vec<i64> = lines.iter().map(|l| l.unit_price.minor).collect();
    let (created_at, updated_at): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "WITH recorded AS (
             INSERT INTO order_refunds (refund_id, order_id, idempotency_key, request_fingerprint, amount_minor,
                                        currency, restock, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')
             RETURNING refund_id, created_at, updated_at),
         lines AS (
             INSERT INTO order_refund_lines (refund_id, line_no, sku, quantity, unit_price_minor)
             SELECT recorded.refund_id, l.* FROM recorded,
                    unnest($8::int[], $9::text[], $10::int[], $11::bigint[]) AS l)
         SELECT created_at, updated_at FROM recorded",
    )
    .bind(refund_id)
    .bind(order_id)
    .bind(request.key.as_str())
    .bind(&fingerprint)
    .bind(planned.amount.minor)
    .bind(planned.amount.currency.as_str())
    .bind(request.restock)
    .bind(&line_no)
    .bind(&skus)
    .bind(&quantities)
    .bind(&prices)
    .fetch_one(&mut *conn)
    .await?;
    // What was written, without reading it back.
    Ok(RefundRecord {
        refund_id,
        order_id,
        idempotency_key: request.key.as_str().to_owned(),
        request_fingerprint: fingerprint,
        status: RefundStatus::Pending,
        amount_minor: planned.amount.minor,
        currency: planned.amount.currency.as_str().to_owned(),
        lines: lines
            .iter()
            .map(|l| StoredLine {
                order_id,
                sku: l.sku.to_string(),
                quantity: l.quantity.get(),
                unit_price_minor: l.unit_price.minor,
            })
            .collect(),
        restock: request.restock,
        failure_reason: None,
        created_at,
        updated_at,
    })
}

/// Settles a pending refund (its order locked): `failure_reason` is kept
/// when it failed.
pub async fn settle_refund(
    conn: &mut PgConnection,
    refund_id: Uuid,
    status: RefundStatus,
    failure_reason: Option<&str>,
) -> Result<(), StoreError> {
    let failure_reason = match status {
        RefundStatus::Failed => Some(failure_reason.filter(|r| !r.is_empty()).unwrap_or("the refund failed")),
        RefundStatus::Pending | RefundStatus::Succeeded => None,
    };
    sqlx::query(
        "UPDATE order_refunds
            SET status = $2, failure_reason = $3, updated_at = clock_timestamp()
          WHERE refund_id = $1 AND status = 'pending'",
    )
    .bind(refund_id)
    .bind(status.as_str())
    .bind(failure_reason)
    .execute(conn)
    .await?;
    Ok(())
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
    let mut orders = rows
        .into_iter()
        .map(OrderRecord::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    with_refunds(&mut conn, &mut orders).await?;
    Ok(orders)
}

pub fn currency(code: &str) -> Option<Currency> {
    Currency::parse(code).ok()
}
