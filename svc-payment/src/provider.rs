//! The payment provider interface and its implementation over a
//! Stripe-shaped HTTP API ([`HttpProvider`], at `PAYMENT_PROVIDER_URL`),
//! which the `shop-provider` emulator speaks.
//!
//! Every call carries the payment's idempotency key: the provider makes at
//! most one charge per key, so a call that timed out can be retried safely
//! and yields the original outcome.

mod http;

use std::future::Future;

use shop_runtime::values::Money;
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
