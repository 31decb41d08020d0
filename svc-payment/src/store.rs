//! Payments in Postgres: one row per order, its status moved only by the
//! functions here. Also the inbox check the saga makes before a charge (the
//! inbox row itself is written with the charge's outcome).

use chrono::{DateTime, Utc};
use shop_runtime::values::Money;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Where a payment stands; the `status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PaymentStatus {
    /// Recorded before the provider is asked; charged at most once under its key.
    Pending,
    /// Whatever was charged is being voided; never charged again.
    Voiding,
    Succeeded,
    Failed,
    Refunded,
    Cancelled,
}

impl PaymentStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Voiding => "voiding",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Refunded => "refunded",
            Self::Cancelled => "cancelled",
        }
    }

    fn from_column(raw: &str) -> Option<Self> {
        Some(match raw {
            "pending" => Self::Pending,
            "voiding" => Self::Voiding,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "refunded" => Self::Refunded,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// How a payment ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settlement<'a> {
    Succeeded { charge_id: &'a str },
    Failed { reason: &'a str },
    Cancelled,
    Refunded,
}

impl Settlement<'_> {
    fn status(self) -> PaymentStatus {
        match self {
            Self::Succeeded { .. } => PaymentStatus::Succeeded,
            Self::Failed { .. } => PaymentStatus::Failed,
            Self::Cancelled => PaymentStatus::Cancelled,
            Self::Refunded => PaymentStatus::Refunded,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Payment {
    pub payment_id: Uuid,
    pub order_id: String,
    pub user_id: String,
    pub status: PaymentStatus,
    pub amount_minor: i64,
    pub currency: String,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Payment {
    /// Being voided because its order was cancelled: whatever the charge
    /// in flight answers, the payment ends cancelled.
    pub(crate) fn voiding_for_cancelled_order(&self) -> bool {
        self.status == PaymentStatus::Voiding && self.failure_reason.as_deref() == Some(ORDER_CANCELLED)
    }
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    payment_id: Uuid,
    order_id: String,
    user_id: String,
    status: String,
    amount_minor: i64,
    currency: String,
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// `SELECT <payment columns> <rest>` as one literal (sqlx wants static SQL).
macro_rules! select_payments {
    ($rest:literal) => {
        concat!(
            "SELECT payment_id, order_id, user_id, status, amount_minor, currency, failure_reason, created_at, ",
            "updated_at FROM payments ",
            $rest
        )
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("payment {0} has an unknown status in the database")]
    CorruptStatus(Uuid),
}

fn status_of(payment_id: Uuid, raw: &str) -> Result<PaymentStatus, StoreError> {
    PaymentStatus::from_column(raw).ok_or(StoreError::CorruptStatus(payment_id))
}

impl TryFrom<PaymentRow> for Payment {
    type Error = StoreError;

    fn try_from(row: PaymentRow) -> Result<Self, StoreError> {
        Ok(Self {
            status: status_of(row.payment_id, &row.status)?,
            payment_id: row.payment_id,
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

/// The payment of `order_id` and its status, locked until the transaction ends.
pub(crate) async fn lock_by_order(
    conn: &mut PgConnection,
    order_id: &str,
) -> Result<Option<(Uuid, PaymentStatus)>, StoreError> {
    let row: Option<(Uuid, String)> =
        sqlx::query_as("SELECT payment_id, status FROM payments WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(conn)
            .await?;
    row.map(|(payment_id, status)| Ok((payment_id, status_of(payment_id, &status)?)))
        .transpose()
}

/// The payment, locked until the transaction ends.
pub(crate) async fn lock(conn: &mut PgConnection, payment_id: Uuid) -> Result<Payment, StoreError> {
    let row: PaymentRow = sqlx::query_as(select_payments!("WHERE payment_id = $1 FOR UPDATE"))
        .bind(payment_id)
        .fetch_one(conn)
        .await?;
    row.try_into()
}

pub(crate) async fn find_by_order(pool: &PgPool, order_id: &str) -> Result<Option<Payment>, StoreError> {
    let row: Option<PaymentRow> = sqlx::query_as(select_payments!("WHERE order_id = $1"))
        .bind(order_id)
        .fetch_optional(pool)
        .await?;
    row.map(Payment::try_from).transpose()
}

/// Records a new `pending` payment of `order_id` and returns its id, the
/// provider-side idempotency key.
pub(crate) async fn insert_pending(
    conn: &mut PgConnection,
    order_id: &str,
    user_id: &str,
    amount: Money,
    payment_method: &str,
) -> Result<Uuid, StoreError> {
    let payment_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO payments (payment_id, order_id, user_id, status, amount_minor, currency, payment_method)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(payment_id)
    .bind(order_id)
    .bind(user_id)
    .bind(PaymentStatus::Pending.as_str())
    .bind(amount.minor)
    .bind(amount.currency.as_str())
    .bind(payment_method)
    .execute(conn)
    .await?;
    Ok(payment_id)
}

/// Records a `cancelled` payment for an order that was never charged, with
/// the order's total when it is known.
pub(crate) async fn insert_tombstone(
    conn: &mut PgConnection,
    order_id: &str,
    user_id: &str,
    total: Option<Money>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO payments (payment_id, order_id, user_id, status, amount_minor, currency, payment_method)
         VALUES ($1, $2, $3, $4, $5, $6, '')",
    )
    .bind(Uuid::now_v7())
    .bind(order_id)
    .bind(user_id)
    .bind(PaymentStatus::Cancelled.as_str())
    .bind(total.map_or(0, |m| m.minor))
    .bind(total.map_or_else(|| "XXX".to_owned(), |m| m.currency.as_str().to_owned()))
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts one more ambiguous provider attempt; returns how many there were.
pub(crate) async fn count_attempt(pool: &PgPool, payment_id: Uuid) -> Result<i32, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE payments SET attempts = attempts + 1, updated_at = clock_timestamp()
          WHERE payment_id = $1 RETURNING attempts",
    )
    .bind(payment_id)
    .fetch_one(pool)
    .await?)
}

/// A `pending` payment turns `voiding`; any other is left as it is.
pub(crate) async fn mark_voiding(pool: &PgPool, payment_id: Uuid) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE payments SET status = $2, updated_at = clock_timestamp()
          WHERE payment_id = $1 AND status = $3",
    )
    .bind(payment_id)
    .bind(PaymentStatus::Voiding.as_str())
    .bind(PaymentStatus::Pending.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// The payment turns `voiding` because its order was cancelled, which
/// [`voiding_for_cancelled_order`] tells later.
pub(crate) async fn mark_voiding_for_cancelled_order(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE payments SET status = $2, failure_reason = $3, updated_at = clock_timestamp()
          WHERE payment_id = $1",
    )
    .bind(payment_id)
    .bind(PaymentStatus::Voiding.as_str())
    .bind(ORDER_CANCELLED)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records how the payment ended.
pub(crate) async fn settle(
    conn: &mut PgConnection,
    payment_id: Uuid,
    settlement: Settlement<'_>,
) -> Result<(), StoreError> {
    let status = settlement.status().as_str();
    let query = match settlement {
        Settlement::Succeeded { charge_id } => sqlx::query(
            "UPDATE payments SET status = $2, charge_id = $3, updated_at = clock_timestamp() WHERE payment_id = $1",
        )
        .bind(payment_id)
        .bind(status)
        .bind(charge_id),
        Settlement::Failed { reason } => sqlx::query(
            "UPDATE payments SET status = $2, failure_reason = $3, updated_at = clock_timestamp()
              WHERE payment_id = $1",
        )
        .bind(payment_id)
        .bind(status)
        .bind(reason),
        Settlement::Cancelled | Settlement::Refunded => {
            sqlx::query("UPDATE payments SET status = $2, updated_at = clock_timestamp() WHERE payment_id = $1")
                .bind(payment_id)
                .bind(status)
        }
    };
    query.execute(conn).await?;
    Ok(())
}
