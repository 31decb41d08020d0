//! Payments in Postgres: one row per order, its status as
//! [`crate::domain::decide`] moved it.

use chrono::{DateTime, Utc};
use shop_runtime::values::Money;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    domain::{Status, Voiding, Wait},
    refunds,
};

/// `(status, failure_reason)` as stored for `status`: the reason of a
/// voiding tells why it is voided, and survives into the status it ends in.
fn columns(status: Status) -> (&'static str, Option<&'static str>) {
    match status {
        Status::Pending { .. } => ("pending", None),
        Status::Awaiting(Wait::Processing) => ("processing", None),
        Status::Awaiting(Wait::CustomerAction) => ("requires_action", None),
        Status::Voiding(Voiding::OutOfAttempts) => ("voiding", None),
        Status::Voiding(Voiding::OrderCancelled) => ("voiding", Some(ORDER_CANCELLED)),
        Status::Voiding(Voiding::LateCapture) => ("refunding", None),
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
        "processing" => Status::Awaiting(Wait::Processing),
        "requires_action" => Status::Awaiting(Wait::CustomerAction),
        "voiding" if failure_reason == Some(ORDER_CANCELLED) => Status::Voiding(Voiding::OrderCancelled),
        "voiding" => Status::Voiding(Voiding::OutOfAttempts),
        "refunding" => Status::Voiding(Voiding::LateCapture),
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
    /// Where the customer authenticates the charge, once it asked for that.
    pub next_action_url: Option<String>,
    /// The provider's charge (intent), once one is known.
    pub charge_id: Option<String>,
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
    next_action_url: Option<String>,
    charge_id: Option<String>,
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
         next_action_url, charge_id, created_at, updated_at"
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
            next_action_url: row.next_action_url,
            charge_id: row.charge_id,
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

/// Payment `payment_id`, locked until the transaction ends.
pub(crate) async fn lock_by_id(conn: &mut PgConnection, payment_id: Uuid) -> Result<Option<Payment>, StoreError> {
    let row: Option<PaymentRow> = sqlx::query_as(select_payments!("WHERE payment_id = $1 FOR UPDATE"))
        .bind(payment_id)
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
    /// Where the customer authenticates a charge that waits for them.
    pub next_action_url: Option<&'a str>,
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
                             failure_reason = COALESCE($5, failure_reason),
                             next_action_url = COALESCE($6, next_action_url), updated_at = clock_timestamp()
          WHERE payment_id = $1",
    )
    .bind(payment_id)
    .bind(status_column)
    .bind(attempts)
    .bind(details.charge_id)
    .bind(details.failure_reason.or(reason))
    .bind(details.next_action_url)
    .execute(conn)
    .await?;
    Ok(())
}

/// A provider webhook as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredWebhook {
    pub event_id: String,
    /// The charge it is about: all that is used of it.
    pub charge_id: String,
}

/// Stores webhook `event_id` unless stored already; `true` when new.
pub(crate) async fn store_webhook(
    pool: &PgPool,
    event_id: &str,
    event_type: &str,
    object_type: &str,
    charge_id: &str,
    body: &serde_json::Value,
) -> Result<bool, StoreError> {
    let stored = sqlx::query(
        "INSERT INTO webhook_events (event_id, event_type, object_type, object_id, body)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(event_type)
    .bind(object_type)
    .bind(charge_id)
    .bind(body)
    .execute(pool)
    .await?;
    Ok(stored.rows_affected() == 1)
}

/// Attempts at handling a webhook before it is left alone (the event list
/// that reconciliation reads names its charge too).
pub(crate) const WEBHOOK_ATTEMPTS: i32 = 20;

/// Webhooks stored at least `older_than` ago and not handled yet, oldest
/// first: those whose handling failed or never ran.
pub(crate) async fn unhandled_webhooks(
    pool: &PgPool,
    older_than: std::time::Duration,
    limit: i64,
) -> Result<Vec<StoredWebhook>, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_id, object_id FROM webhook_events
          WHERE handled_at IS NULL AND attempts < $3
            AND received_at < clock_timestamp() - make_interval(secs => $1)
          ORDER BY received_at LIMIT $2",
    )
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .bind(WEBHOOK_ATTEMPTS)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(event_id, charge_id)| StoredWebhook { event_id, charge_id })
        .collect())
}

/// Records that webhook `event_id` was handled, or (`handled: false`) one
/// more attempt that failed.
pub(crate) async fn mark_webhook(pool: &PgPool, event_id: &str, handled: bool) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_events SET attempts = attempts + 1,
                handled_at = CASE WHEN $2 THEN clock_timestamp() END
          WHERE event_id = $1",
    )
    .bind(event_id)
    .bind(handled)
    .execute(pool)
    .await?;
    Ok(())
}

/// The provider event reconciliation read up to.
pub(crate) async fn checkpoint(conn: &mut PgConnection) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT last_event_id FROM provider_checkpoint")
        .fetch_one(conn)
        .await?)
}

pub(crate) async fn set_checkpoint(conn: &mut PgConnection, last_event_id: Option<&str>) -> Result<(), StoreError> {
    sqlx::query("UPDATE provider_checkpoint SET last_event_id = $1, updated_at = clock_timestamp()")
        .bind(last_event_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the reconciliation lock on `conn`'s session, if no other replica
/// holds it: one replica reads the provider's events at a time. It goes
/// with the session, so a replica that dies lets go of it.
pub(crate) async fn try_lock_reconciliation(conn: &mut PgConnection) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('svc-payment reconciliation'))")
            .fetch_one(conn)
            .await?,
    )
}

pub(crate) async fn unlock_reconciliation(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_unlock(hashtext('svc-payment reconciliation'))")
        .execute(conn)
        .await?;
    Ok(())
}

/// A refund as stored.
#[derive(Debug, Clone)]
pub(crate) struct Refund {
    pub refund_id: String,
    pub payment_id: Uuid,
    pub order_id: String,
    pub user_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: refunds::Status,
    pub failure_reason: Option<String>,
}

#[derive(sqlx::FromRow)]
struct RefundRow {
    refund_id: String,
    payment_id: Uuid,
    order_id: String,
    user_id: String,
    amount_minor: i64,
    currency: String,
    status: String,
    attempt: i32,
    failure_reason: Option<String>,
}

impl TryFrom<RefundRow> for Refund {
    type Error = StoreError;

    fn try_from(row: RefundRow) -> Result<Self, StoreError> {
        let attempt = u32::try_from(row.attempt).map_err(|_| StoreError::CorruptStatus(row.payment_id))?;
        let status = match row.status.as_str() {
            "requested" => refunds::Status::Requested { attempt },
            "pending" => refunds::Status::Pending { attempt },
            "succeeded" => refunds::Status::Succeeded,
            "failed" => refunds::Status::Failed,
            _ => return Err(StoreError::CorruptStatus(row.payment_id)),
        };
        Ok(Self {
            refund_id: row.refund_id,
            payment_id: row.payment_id,
            order_id: row.order_id,
            user_id: row.user_id,
            amount_minor: row.amount_minor,
            currency: row.currency,
            status,
            failure_reason: row.failure_reason,
        })
    }
}

fn refund_columns(status: refunds::Status) -> (&'static str, Option<i32>) {
    let attempt = |a: u32| Some(i32::try_from(a).unwrap_or(i32::MAX));
    match status {
        refunds::Status::Requested { attempt: a } => ("requested", attempt(a)),
        refunds::Status::Pending { attempt: a } => ("pending", attempt(a)),
        refunds::Status::Succeeded => ("succeeded", None),
        refunds::Status::Failed => ("failed", None),
    }
}

/// Refund `refund_id`, locked until the transaction ends.
pub(crate) async fn lock_refund(conn: &mut PgConnection, refund_id: &str) -> Result<Option<Refund>, StoreError> {
    let row: Option<RefundRow> = sqlx::query_as(
        "SELECT refund_id, payment_id, order_id, user_id, amount_minor, currency, status, attempt, failure_reason
           FROM refunds WHERE refund_id = $1 FOR UPDATE",
    )
    .bind(refund_id)
    .fetch_optional(conn)
    .await?;
    row.map(Refund::try_from).transpose()
}

/// Records refund `refund` in `status`.
pub(crate) async fn create_refund(
    conn: &mut PgConnection,
    refund: &Refund,
    status: refunds::Status,
) -> Result<(), StoreError> {
    let (status, attempt) = refund_columns(status);
    sqlx::query(
        "INSERT INTO refunds (refund_id, payment_id, order_id, user_id, amount_minor, currency, status, attempt)
         VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, 0))",
    )
    .bind(&refund.refund_id)
    .bind(refund.payment_id)
    .bind(&refund.order_id)
    .bind(&refund.user_id)
    .bind(refund.amount_minor)
    .bind(&refund.currency)
    .bind(status)
    .bind(attempt)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the locked refund to `status`, with the provider's refund and
/// the reason of a failure when there are.
pub(crate) async fn update_refund(
    conn: &mut PgConnection,
    refund_id: &str,
    status: refunds::Status,
    provider_refund_id: Option<&str>,
    failure_reason: Option<&str>,
) -> Result<(), StoreError> {
    let (status, attempt) = refund_columns(status);
    sqlx::query(
        "UPDATE refunds SET status = $2, attempt = COALESCE($3, attempt),
                provider_refund_id = COALESCE($4, provider_refund_id),
                failure_reason = COALESCE($5, failure_reason), updated_at = clock_timestamp()
          WHERE refund_id = $1",
    )
    .bind(refund_id)
    .bind(status)
    .bind(attempt)
    .bind(provider_refund_id)
    .bind(failure_reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// The pending refunds of payment `payment_id`: `(refund id, provider refund id)`.
pub(crate) async fn pending_refunds(pool: &PgPool, payment_id: Uuid) -> Result<Vec<(String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT refund_id, provider_refund_id FROM refunds
          WHERE payment_id = $1 AND status = 'pending' AND provider_refund_id IS NOT NULL",
    )
    .bind(payment_id)
    .fetch_all(pool)
    .await?)
}
