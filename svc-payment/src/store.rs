//! Payments in Postgres: one row per order, its status as
//! [`crate::domain::decide`] moved it.

use chrono::{DateTime, Utc};
use shop_runtime::values::Money;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::{Status, Voiding};

/// `(status, failure_reason)` as stored for `status`: the reason of a
/// voiding tells why it is voided, and survives into the status it ends in.
fn columns(status: Status) -> (&'static str, Option<&'static str>) {
    match status {
        Status::Pending { .. } => ("pending", None),
        Status::Voiding(Voiding::OutOfAttempts) => ("voiding", None),
        Status::Voiding(Voiding::OrderCancelled) => ("voiding", Some(ORDER_CANCELLED)),
        Status::Succeeded => ("succeeded", None),
        Status::Failed => ("failed", None),
        Status::Refunded => ("refunded", None),
        Status::Cancelled => ("cancelled", None),
    }
}

fn from_columns(status: &str, attempts: i32, failure_reason: Option<&str>) -> Option<Status> {
    Some(match status {
        "pending" => Status::Pending {
            attempts: u32::try_from(attempts).ok()?,
        },
        "voiding" if failure_reason == Some(ORDER_CANCELLED) => Status::Voiding(Voiding::OrderCancelled),
        "voiding" => Status::Voiding(Voiding::OutOfAttempts),
        "succeeded" => Status::Succeeded,
        "failed" => Status::Failed,
        "refunded" => Status::Refunded,
        "cancelled" => Status::Cancelled,
        _ => return None,
    })
}

#[derive(Debug, Clone)]
pub(crate) struct Payment {
    pub payment_id: Uuid,
    pub order_id: String,
    pub user_id: String,
    pub status: Status,
    pub payment_method: String,
    pub amount_minor: i64,
    pub currency: String,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    payment_id: Uuid,
    order_id: String,
    user_id: String,
    status: String,
    attempts: i32,
    payment_method: String,
    amount_minor: i64,
    currency: String,
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// `SELECT <payment columns> <rest>` as one literal (sqlx wants static SQL).
macro_rules! select_payments {
    ($rest:literal) => {
        concat!("SELECT ", payment_columns!(), " FROM payments ", $rest)
    };
}

/// The columns of a [`PaymentRow`].
macro_rules! payment_columns {
    () => {
        "payment_id, order_id, user_id, status, attempts, payment_method, amount_minor, currency, failure_reason, \
         created_at, updated_at"
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("payment {0} has an unknown status in the database")]
    CorruptStatus(Uuid),
}

impl TryFrom<PaymentRow> for Payment {
    type Error = StoreError;

    fn try_from(row: PaymentRow) -> Result<Self, StoreError> {
        Ok(Self {
            status: from_columns(&row.status, row.attempts, row.failure_reason.as_deref())
                .ok_or(StoreError::CorruptStatus(row.payment_id))?,
            payment_id: row.payment_id,
            payment_method: row.payment_method,
            order_id: row.order_id,
            user_id: row.user_id,
            amount_minor: row.amount_minor,
            currency: row.currency,
            failure_reason: row.failure_reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// `failure_reason` of a payment voided because its order was cancelled.
const ORDER_CANCELLED: &str = "order_cancelled";

/// The payment of `order_id`, locked until the transaction ends.
pub(crate) async fn lock_by_order(conn: &mut PgConnection, order_id: &str) -> Result<Option<Payment>, StoreError> {
    let row: Option<PaymentRow> = sqlx::query_as(select_payments!("WHERE order_id = $1 FOR UPDATE"))
        .bind(order_id)
        .fetch_optional(conn)
        .await?;
    row.map(Payment::try_from).transpose()
}

pub(crate) async fn find_by_order(pool: &PgPool, order_id: &str) -> Result<Option<Payment>, StoreError> {
    let row: Option<PaymentRow> = sqlx::query_as(select_payments!("WHERE order_id = $1"))
        .bind(order_id)
        .fetch_optional(pool)
        .await?;
    row.map(Payment::try_from).transpose()
}

/// What a payment is created with: its order's, from the event that
/// created it (a cancellation may not know the amount).
#[derive(Debug, Clone)]
pub(crate) struct NewPayment<'a> {
    pub order_id: &'a str,
    pub user_id: &'a str,
    pub amount: Option<Money>,
    pub payment_method: &'a str,
}

/// What a status records besides itself.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Details<'a> {
    /// The provider's charge of a succeeded payment.
    pub charge_id: Option<&'a str>,
    /// Why a payment failed.
    pub failure_reason: Option<&'a str>,
}

/// Records a new payment in `status`, unless its order has one already
/// (`None`); its id is the provider-side idempotency key. On a pool, in a
/// statement of its own, or in the caller's transaction.
pub(crate) async fn create<'c>(
    conn: impl PgExecutor<'c>,
    new: &NewPayment<'_>,
    status: Status,
    details: Details<'_>,
) -> Result<Option<Payment>, StoreError> {
    let payment_id = Uuid::now_v7();
    let (status_column, reason) = columns(status);
    let attempts = match status {
        Status::Pending { attempts } => i32::try_from(attempts).unwrap_or(i32::MAX),
        _ => 0,
    };
    let row: Option<PaymentRow> = sqlx::query_as(concat!(
        "INSERT INTO payments (payment_id, order_id, user_id, status, attempts, amount_minor, currency,
                               payment_method, charge_id, failure_reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (order_id) DO NOTHING RETURNING ",
        payment_columns!()
    ))
    .bind(payment_id)
    .bind(new.order_id)
    .bind(new.user_id)
    .bind(status_column)
    .bind(attempts)
    .bind(new.amount.map_or(0, |m| m.minor))
    .bind(
        new.amount
            .map_or_else(|| "XXX".to_owned(), |m| m.currency.as_str().to_owned()),
    )
    .bind(new.payment_method)
    .bind(details.charge_id)
    .bind(details.failure_reason.or(reason))
    .fetch_optional(conn)
    .await?;
    row.map(Payment::try_from).transpose()
}

/// Moves the locked payment to `status`.
pub(crate) async fn update(
    conn: &mut PgConnection,
    payment_id: Uuid,
    status: Status,
    details: Details<'_>,
) -> Result<(), StoreError> {
    let (status_column, reason) = columns(status);
    let attempts = match status {
        Status::Pending { attempts } => Some(i32::try_from(attempts).unwrap_or(i32::MAX)),
        _ => None,
    };
    sqlx::query(
        "UPDATE payments SET status = $2, attempts = COALESCE($3, attempts), charge_id = COALESCE($4, charge_id),
                             failure_reason = COALESCE($5, failure_reason), updated_at = clock_timestamp()
          WHERE payment_id = $1",
    )
    .bind(payment_id)
    .bind(status_column)
    .bind(attempts)
    .bind(details.charge_id)
    .bind(details.failure_reason.or(reason))
    .execute(conn)
    .await?;
    Ok(())
}
