//! The payment provider interface and its two implementations: the
//! deterministic simulator in svc-payment's own database
//! ([`SimulatedProvider`], the default) and a Stripe-shaped HTTP API such as
//! the `shop-provider` emulator ([`HttpProvider`], with
//! `PAYMENT_PROVIDER_URL`).
//!
//! Every call carries the payment's idempotency key: the provider makes at
//! most one charge per key, so a call that timed out can be retried safely
//! and yields the original outcome.

mod http;

use std::future::Future;

use shop_runtime::values::Money;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{domain::Standing, refunds};

pub use http::{HttpProvider, HttpProviderError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded {
        charge_id: String,
    },
    Declined {
        reason: String,
    },
    /// Taken but not settled: it settles later by itself, or, with a
    /// `next_action_url`, once the customer authenticated there. The
    /// provider says how by webhook and in its event list.
    Awaiting {
        charge_id: String,
        next_action_url: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No answer in time: the charge may or may not have happened.
    #[error("the provider did not answer in time")]
    Timeout,
    /// The provider refused the call (unreachable, down for maintenance,
    /// overloaded): it changed nothing, and the call can be repeated.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
}

pub trait PaymentProvider: Send + Sync + 'static {
    /// Charges `amount` once per `key`; a repeated key returns the first
    /// outcome without charging again. `order_id`, the order it pays, is
    /// only recorded with the charge (the same for every call of a key).
    fn charge(
        &self,
        key: Uuid,
        order_id: &str,
        amount: Money,
        method: &str,
    ) -> impl Future<Output = Result<ChargeOutcome, ProviderError>> + Send;

    /// Gives back the charge made under `key` (no-op if none or already
    /// refunded), and makes sure no charge under `key` can happen later.
    fn refund_or_void(&self, key: Uuid) -> impl Future<Output = Result<(), ProviderError>> + Send;
}

/// What the provider records, read back: a charge as it stands now, and
/// the list of everything that happened. A webhook only says where to
/// look; what svc-payment acts on is read here.
pub trait ProviderRecords: Send + Sync + 'static {
    /// Charge (intent) `charge_id` as the provider has it now; `None` if
    /// the provider has no such charge.
    fn read(&self, charge_id: &str) -> impl Future<Output = Result<Option<Reading>, ProviderError>> + Send;

    /// The provider's events after event `after` (from the first when
    /// `None`), oldest first, one page.
    fn events_after(&self, after: Option<&str>) -> impl Future<Output = Result<EventPage, ProviderError>> + Send;
}

/// Refunds of captured charges, after their orders were confirmed.
pub trait ProviderRefunds: Send + Sync + 'static {
    /// Refunds `amount_minor` of charge `charge_id`, once per `key`: a
    /// repeated key answers with the refund it made.
    fn refund(
        &self,
        key: &str,
        charge_id: &str,
        amount_minor: i64,
    ) -> impl Future<Output = Result<RefundReading, ProviderError>> + Send;

    /// Refund `refund_id` as the provider has it now; `None` if unknown.
    fn read_refund(&self, refund_id: &str)
    -> impl Future<Output = Result<Option<RefundReading>, ProviderError>> + Send;
}

/// A refund as the provider has it (or refused it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReading {
    /// The provider's refund; `None` when it refused to make one.
    pub refund_id: Option<String>,
    pub state: refunds::Answer,
    /// Why it failed, when it did.
    pub reason: Option<String>,
}

/// A charge as the provider has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub charge_id: String,
    /// The payment it was made for, as the provider recorded it when the
    /// charge was made (`None`: not one of svc-payment's).
    pub payment_id: Option<Uuid>,
    pub standing: Standing,
    /// Why it was declined, when it was.
    pub declined: Option<String>,
    /// Where the customer authenticates it, when it waits for that.
    pub next_action_url: Option<String>,
}

/// One page of the provider's event list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<ProviderEvent>,
    /// More events follow the last of this page.
    pub has_more: bool,
    /// The provider no longer knows the event read after (it started
    /// afresh): read again from the first.
    pub cursor_lost: bool,
}

/// One event of the provider's list: its id, and the charge it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    pub id: String,
    /// The charge (intent) it concerns, directly or through a refund of it.
    pub charge_id: Option<String>,
}

/// Deterministic provider driven by the payment method token:
/// `pm_card_ok` succeeds, `pm_card_declined` is declined, `pm_card_timeout`
/// makes the charge but loses the first answer (a timeout), so only a retry
/// with the same key learns the outcome. Any other token is declined.
/// [`set_outage`](Self::set_outage) takes the whole provider down and back.
#[derive(Clone)]
pub struct SimulatedProvider {
    pool: PgPool,
}

impl SimulatedProvider {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Takes the simulated provider down (every call fails as unreachable)
    /// or brings it back, for every replica using this database.
    pub async fn set_outage(pool: &PgPool, down: bool) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE simulated_provider.switch SET down = $1")
            .bind(down)
            .execute(pool)
            .await
            .map(drop)
    }

    async fn reachable(&self) -> Result<(), ProviderError> {
        let down: bool = sqlx::query_scalar("SELECT down FROM simulated_provider.switch")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        if down {
            return Err(ProviderError::Unavailable("simulated outage".into()));
        }
        Ok(())
    }
}

fn unavailable(e: sqlx::Error) -> ProviderError {
    ProviderError::Unavailable(e.to_string())
}

impl PaymentProvider for SimulatedProvider {
    async fn charge(
        &self,
        key: Uuid,
        _order_id: &str,
        amount: Money,
        method: &str,
    ) -> Result<ChargeOutcome, ProviderError> {
        let status = if method == "pm_card_declined" || !method.starts_with("pm_card_") {
            "declined"
        } else {
            "succeeded"
        };
        // One statement: nothing is charged, and no row comes back, while
        // the provider is down.
        let charged: Option<(Uuid, String, i32)> = sqlx::query_as(
            "INSERT INTO simulated_provider.charges (charge_id, idempotency_key, payment_method, amount_minor, currency, status)
             SELECT $1, $2, $3, $4, $5, $6 FROM simulated_provider.switch WHERE NOT down
             ON CONFLICT (idempotency_key)
             DO UPDATE SET calls = simulated_provider.charges.calls + 1, updated_at = clock_timestamp()
             RETURNING charge_id, status, calls",
        )
        .bind(Uuid::now_v7())
        .bind(key.to_string())
        .bind(method)
        .bind(amount.minor)
        .bind(amount.currency.as_str())
        .bind(status)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let Some((charge_id, stored_status, calls)) = charged else {
            return Err(ProviderError::Unavailable("simulated outage".into()));
        };
        if method == "pm_card_timeout" && calls == 1 {
            // The money moved, but the answer never reaches the caller.
            return Err(ProviderError::Timeout);
        }
        Ok(match stored_status.as_str() {
            "succeeded" | "refunded" => ChargeOutcome::Succeeded {
                charge_id: charge_id.to_string(),
            },
            "voided" => ChargeOutcome::Declined {
                reason: "voided".into(),
            },
            _ => ChargeOutcome::Declined {
                reason: "card_declined".into(),
            },
        })
    }

    async fn refund_or_void(&self, key: Uuid) -> Result<(), ProviderError> {
        self.reachable().await?;
        // A void is recorded as a row too, so a late charge with this key
        // finds it and does nothing.
        sqlx::query(
            "INSERT INTO simulated_provider.charges (charge_id, idempotency_key, payment_method, amount_minor, currency, status)
             VALUES ($1, $2, '', 0, 'XXX', 'voided')
             ON CONFLICT (idempotency_key) DO UPDATE
                SET status = CASE WHEN simulated_provider.charges.status = 'succeeded' THEN 'refunded'
                                  ELSE simulated_provider.charges.status END,
                    updated_at = clock_timestamp()",
        )
        .bind(Uuid::now_v7())
        .bind(key.to_string())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
