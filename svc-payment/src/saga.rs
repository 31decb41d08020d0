//! svc-payment's part of the checkout saga: `inventory.reserved` → charge →
//! `payments.succeeded` | `payments.failed`; `orders.cancelled` → refund or
//! void → `payments.refunded`.
//!
//! The provider call happens between two transactions (never inside one):
//! the first records a `pending` payment whose id is the provider-side
//! idempotency key, the second records the outcome with the inbox row and the
//! outgoing event. A crash or timeout in between leaves the payment `pending`;
//! redelivery calls the provider again with the same key, which returns the
//! original outcome, so there is exactly one charge or none. When the
//! attempts run out on an ambiguous answer, or the order is cancelled while
//! its charge is unsettled, the payment turns `voiding` before the provider
//! is asked to void: from then on it is only ever voided and failed, never
//! charged again.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use shop_proto::events::v1 as ev;
use shop_runtime::{
    consumer::{EventHandler, HandleError},
    event::IncomingEvent,
    inbox,
    outbox::Outbox,
    values::{Money, timestamp},
};
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    provider::{ChargeOutcome, PaymentProvider, ProviderError},
    store::{self, PaymentStatus, Settlement, StoreError},
};

pub const RESERVED_CONSUMER: &str = "payment-inventory";
pub const CANCELLED_CONSUMER: &str = "payment-orders";

pub struct PaymentSaga<P> {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub provider: Arc<P>,
    pub consumer: &'static str,
    /// How long one provider call may take before it counts as a timeout.
    pub provider_timeout: Duration,
    /// Provider attempts before an ambiguous charge is voided and failed.
    pub max_attempts: i32,
}

enum Outcome {
    Succeeded {
        charge_id: String,
    },
    Failed {
        reason: String,
    },
    /// The order was cancelled before its charge settled, and whatever the
    /// charge took was voided. Nothing to announce: the order is over.
    Cancelled,
}

impl From<StoreError> for HandleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(e) => e.into(),
            StoreError::CorruptStatus(_) => HandleError::Reject(e.to_string()),
        }
    }
}

fn money(m: Option<&shop_proto::common::v1::Money>, what: &str) -> Result<Money, HandleError> {
    m.ok_or_else(|| HandleError::Reject(format!("{what} is missing")))
        .and_then(|m| Money::from_proto(m).map_err(|e| HandleError::Reject(format!("{what}: {e}"))))
}

impl<P: PaymentProvider> EventHandler for PaymentSaga<P> {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
        if event.is::<ev::InventoryReserved>() {
            let reserved = event.decode()?;
            self.on_reserved(&event, reserved).await
        } else if event.is::<ev::OrderCancelled>() {
            let cancelled = event.decode()?;
            self.on_cancelled(&event, cancelled).await
        } else {
            Err(HandleError::unknown_type(&event))
        }
    }
}

impl<P: PaymentProvider> PaymentSaga<P> {
    async fn on_reserved(&self, event: &IncomingEvent, reserved: ev::InventoryReserved) -> Result<(), HandleError> {
        let amount = money(reserved.total.as_ref(), "total")?;
        let mut tx = self.pool.begin().await?;
        // No inbox check first: an event is recorded only with its payment
        // settled, and a settled payment is a replay's end below.
        let payment_id = match store::lock_by_order(&mut tx, &reserved.order_id).await? {
            Some((payment_id, PaymentStatus::Pending)) => {
                tx.commit().await?;
                payment_id
            }
            Some((payment_id, PaymentStatus::Voiding)) => {
                // Never charge again: the provider would answer with the
                // original charge, refunded or not.
                tx.commit().await?;
                return self.void_and_fail(event, payment_id).await;
            }
            Some(_) => {
                // Settled (or cancelled) before: a replay changes nothing.
                inbox::claim(&mut tx, self.consumer, event).await?;
                tx.commit().await?;
                return Ok(());
            }
            None => {
                let expired = reserved
                    .expires_at
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, 0))
                    .is_some_and(|deadline| deadline <= Utc::now());
                let payment_id = store::insert_pending(
                    &mut tx,
                    &reserved.order_id,
                    &reserved.user_id,
                    amount,
                    &reserved.payment_method,
                )
                .await?;
                if expired {
                    // The stock is gone already; charging now would only mean a refund.
                    tx.commit().await?;
                    return self
                        .finish(
                            event,
                            payment_id,
                            Outcome::Failed {
                                reason: "reservation_expired".into(),
                            },
                        )
                        .await;
                }
                tx.commit().await?;
                payment_id
            }
        };

        // The provider is another company's system: its time is its own span.
        let call = self
            .provider
            .charge(payment_id, amount, &reserved.payment_method)
            .instrument(tracing::info_span!("provider charge", otel.kind = "client", %payment_id));
        let answer = match tokio::time::timeout(self.provider_timeout, call).await {
            Ok(answer) => answer,
            Err(_) => Err(ProviderError::Timeout),
        };
        match answer {
            Ok(ChargeOutcome::Succeeded { charge_id }) => {
                self.finish(event, payment_id, Outcome::Succeeded { charge_id }).await
            }
            Ok(ChargeOutcome::Declined { reason }) => self.finish(event, payment_id, Outcome::Failed { reason }).await,
            // Refused, not lost: an outage of the provider delays the
            // payment, however long it lasts, without failing it. The
            // reservation's deadline bounds the wait; a cancellation then
            // voids the charge.
            Err(error @ ProviderError::Unavailable(_)) => Err(HandleError::Retry(format!("charge: {error}"))),
            Err(error @ ProviderError::Timeout) => {
                let attempts = store::count_attempt(&self.pool, payment_id).await?;
                if attempts < self.max_attempts {
                    return Err(HandleError::Retry(format!("charge attempt {attempts}: {error}")));
                }
                // Out of attempts with an unknown outcome: make sure no
                // charge stands, then fail the payment. The intent is
                // recorded first, so whatever happens next is a void.
                store::mark_voiding(&self.pool, payment_id).await?;
                self.void_and_fail(event, payment_id).await
            }
        }
    }

    /// Voids (or refunds) whatever the provider may have charged under this
    /// `voiding` payment's key, then settles the payment as the voiding
    /// intended: cancelled (its order was) or failed. Safe to repeat.
    async fn void_and_fail(&self, event: &IncomingEvent, payment_id: Uuid) -> Result<(), HandleError> {
        self.refund_or_void(payment_id)
            .await
            .map_err(|e| HandleError::Retry(format!("voiding a charge: {e}")))?;
        // `finish` turns this into `Cancelled` when the voiding was the
        // cancelled order's.
        let outcome = Outcome::Failed {
            reason: "provider_unreachable".into(),
        };
        self.finish(event, payment_id, outcome).await
    }

    /// Records the outcome of a pending (or, for a failure, voiding)
    /// payment and publishes it, once.
    async fn finish(&self, event: &IncomingEvent, payment_id: Uuid, outcome: Outcome) -> Result<(), HandleError> {
        let mut tx = self.outbox.begin(&self.pool).await?;
        let payment = store::lock(&mut tx, payment_id).await?;
        let claimed = inbox::claim(&mut tx, self.consumer, event).await?;
        // A charge that was in flight when its order was cancelled answers
        // after the void (declined "voided", or the refunded charge): the
        // cancellation decides how the payment ends.
        let outcome = if payment.voiding_for_cancelled_order() {
            Outcome::Cancelled
        } else {
            outcome
        };
        let open = match outcome {
            Outcome::Succeeded { .. } => payment.status == PaymentStatus::Pending,
            Outcome::Failed { .. } | Outcome::Cancelled => {
                matches!(payment.status, PaymentStatus::Pending | PaymentStatus::Voiding)
            }
        };
        if !open || !claimed {
            self.outbox.commit(tx).await?;
            return Ok(());
        }
        let amount = Some(shop_proto::common::v1::Money {
            currency_code: payment.currency,
            amount_minor: payment.amount_minor,
        });
        match outcome {
            Outcome::Succeeded { charge_id } => {
                store::settle(&mut tx, payment_id, Settlement::Succeeded { charge_id: &charge_id }).await?;
                let succeeded = ev::PaymentSucceeded {
                    order_id: payment.order_id,
                    user_id: payment.user_id,
                    payment_id: payment_id.to_string(),
                    amount,
                    charged_at: Some(timestamp(Utc::now())),
                };
                self.outbox.enqueue(&mut tx, &succeeded).await?;
            }
            Outcome::Failed { reason } => {
                store::settle(&mut tx, payment_id, Settlement::Failed { reason: &reason }).await?;
                let failed = ev::PaymentFailed {
                    order_id: payment.order_id,
                    user_id: payment.user_id,
                    payment_id: payment_id.to_string(),
                    reason,
                };
                self.outbox.enqueue(&mut tx, &failed).await?;
            }
            Outcome::Cancelled => store::settle(&mut tx, payment_id, Settlement::Cancelled).await?,
        }
        self.outbox.commit(tx).await?;
        Ok(())
    }

    async fn on_cancelled(&self, event: &IncomingEvent, cancelled: ev::OrderCancelled) -> Result<(), HandleError> {
        let mut tx = self.pool.begin().await?;
        // As for `inventory.reserved`: once recorded, the payment is settled.
        match store::lock_by_order(&mut tx, &cancelled.order_id).await? {
            None => {
                // Cancelled before any charge: leave a tombstone so a late
                // `inventory.reserved` charges nothing.
                let total = cancelled.total.as_ref().and_then(|m| Money::from_proto(m).ok());
                store::insert_tombstone(&mut tx, &cancelled.order_id, &cancelled.user_id, total).await?;
                inbox::claim(&mut tx, self.consumer, event).await?;
                tx.commit().await?;
                Ok(())
            }
            Some((payment_id, PaymentStatus::Pending | PaymentStatus::Voiding)) => {
                // A charge in flight (or stuck behind a provider outage) for
                // an order that is over: give back whatever it took instead
                // of waiting for it to settle, which may never happen. The
                // intent comes first, so the charge can no longer succeed.
                store::mark_voiding_for_cancelled_order(&mut tx, payment_id).await?;
                tx.commit().await?;
                self.void_and_fail(event, payment_id).await
            }
            Some((payment_id, PaymentStatus::Succeeded)) => {
                tx.commit().await?;
                self.refund_or_void(payment_id)
                    .await
                    .map_err(|e| HandleError::Retry(format!("refund: {e}")))?;
                self.record_refund(event, payment_id).await
            }
            Some(_) => {
                inbox::claim(&mut tx, self.consumer, event).await?;
                tx.commit().await?;
                Ok(())
            }
        }
    }

    /// The provider's refund or void, bounded like a charge.
    async fn refund_or_void(&self, payment_id: Uuid) -> Result<(), ProviderError> {
        let call = self
            .provider
            .refund_or_void(payment_id)
            .instrument(tracing::info_span!("provider refund", otel.kind = "client", %payment_id));
        tokio::time::timeout(self.provider_timeout, call)
            .await
            .unwrap_or(Err(ProviderError::Timeout))
    }

    async fn record_refund(&self, event: &IncomingEvent, payment_id: Uuid) -> Result<(), HandleError> {
        let mut tx = self.outbox.begin(&self.pool).await?;
        let payment = store::lock(&mut tx, payment_id).await?;
        let claimed = inbox::claim(&mut tx, self.consumer, event).await?;
        if claimed && payment.status == PaymentStatus::Succeeded {
            store::settle(&mut tx, payment_id, Settlement::Refunded).await?;
            let refunded = ev::PaymentRefunded {
                order_id: payment.order_id,
                user_id: payment.user_id,
                payment_id: payment_id.to_string(),
                amount: Some(shop_proto::common::v1::Money {
                    currency_code: payment.currency,
                    amount_minor: payment.amount_minor,
                }),
            };
            self.outbox.enqueue(&mut tx, &refunded).await?;
        }
        self.outbox.commit(tx).await?;
        Ok(())
    }
}
