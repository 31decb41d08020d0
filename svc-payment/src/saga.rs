//! svc-payment's part of the checkout saga: `inventory.reserved` → charge →
//! `payments.succeeded` | `payments.failed`; `orders.cancelled` → refund or
//! void → `payments.refunded`. What each step means is
//! [`crate::domain::decide`]'s; this module applies it.
//!
//! The provider call happens between two transactions (never inside one):
//! the first records a `pending` payment whose id is the provider-side
//! idempotency key (a single `INSERT … ON CONFLICT DO NOTHING` when the
//! order has none yet), the second records the outcome with the inbox row
//! and the outgoing event. A crash or timeout in between leaves the payment
//! `pending`; redelivery calls the provider again with the same key, which
//! returns the original outcome, so there is exactly one charge or none.
//! When the attempts run out on an ambiguous answer, or the order is
//! cancelled while its charge is unsettled, the payment turns `voiding`
//! before the provider is asked to void: from then on it is only ever voided
//! and failed (or cancelled), never charged again, and it leaves `voiding`
//! only once a void went through.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use shop_proto::events::v1 as ev;
use shop_runtime::{
    consumer::{EventHandler, HandleError},
    event::{self, IncomingEvent},
    inbox,
    outbox::{Outbox, Staging},
    values::{Money, timestamp},
};
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    domain::{self, Call, ChargeAnswer, Input, Publish, Then, VoidAnswer, Wait},
    provider::{ChargeOutcome, PaymentProvider, ProviderError},
    store::{self, Details, NewPayment, Payment, StoreError},
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
    pub max_attempts: u32,
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
            let reserved: ev::InventoryReserved = event.decode()?;
            let order_id = event::order_id(&reserved.order_id)?.to_string();
            let expired = reserved
                .expires_at
                .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, 0))
                .is_some_and(|deadline| deadline <= Utc::now());
            let new = NewPayment {
                order_id: &order_id,
                user_id: &reserved.user_id,
                amount: Some(money(reserved.total.as_ref(), "total")?),
                payment_method: &reserved.payment_method,
            };
            self.run(
                Some(&event),
                Which::Order(&new),
                Input::Reserved { expired },
                Answer::default(),
            )
            .await
        } else if event.is::<ev::OrderCancelled>() {
            let cancelled: ev::OrderCancelled = event.decode()?;
            let order_id = event::order_id(&cancelled.order_id)?.to_string();
            let new = NewPayment {
                order_id: &order_id,
                user_id: &cancelled.user_id,
                amount: cancelled.total.as_ref().and_then(|m| Money::from_proto(m).ok()),
                payment_method: "",
            };
            self.run(Some(&event), Which::Order(&new), Input::Cancelled, Answer::default())
                .await
        } else {
            Err(HandleError::unknown_type(&event))
        }
    }
}

/// A provider's answer, with what [`Input`] leaves out.
#[derive(Debug, Default)]
pub struct Answer {
    /// The provider's intent (or charge) made under the payment's key.
    pub charge_id: Option<String>,
    /// Why the provider declined.
    pub declined: Option<String>,
    /// Where the customer authenticates the charge.
    pub next_action_url: Option<String>,
}

/// The payment a handling is about.
#[derive(Clone, Copy)]
enum Which<'a> {
    /// An order's, created from the event when the order has none.
    Order(&'a NewPayment<'a>),
    /// One that exists, by its id.
    Id(Uuid),
}

impl<P: PaymentProvider> PaymentSaga<P> {
    /// Decides on what the provider shows under payment `payment_id` now
    /// (read after a webhook, or by reconciliation), then makes the calls
    /// that follows. `Ok` also when there is no such payment.
    pub async fn apply_found(
        &self,
        payment_id: Uuid,
        standing: domain::Standing,
        answer: Answer,
    ) -> Result<(), HandleError> {
        self.run(None, Which::Id(payment_id), Input::Found(standing), answer)
            .await
    }

    /// Handles `input` on: each decision in a transaction of its own under
    /// the payment's row lock, each provider call it names between two of
    /// them, until the input is handled or to be retried. `claim`: the
    /// event to record in the inbox when it is.
    async fn run(
        &self,
        claim: Option<&IncomingEvent>,
        which: Which<'_>,
        mut input: Input,
        mut answer: Answer,
    ) -> Result<(), HandleError> {
        let mut created = match which {
            Which::Order(new) => self.create_alone(new, input).await?,
            Which::Id(_) => None,
        };
        loop {
            let (then, payment) = match created.take() {
                Some(first) => first,
                None => self.step(claim, which, input, &answer).await?,
            };
            input = match (then, payment) {
                (Then::Done, _) => return Ok(()),
                (Then::Retry(why), _) => return Err(HandleError::Retry(why.to_owned())),
                (Then::Call(_), None) => return Err(HandleError::Reject("no payment to call the provider for".into())),
                (Then::Call(Call::Charge), Some(payment)) => {
                    let Which::Order(new) = which else {
                        return Err(HandleError::Reject(format!(
                            "payment {} is charged only by its order's events",
                            payment.payment_id
                        )));
                    };
                    let amount = new
                        .amount
                        .ok_or_else(|| HandleError::Reject("total is missing".into()))?;
                    let (charged, details) = self
                        .charge(payment.payment_id, new.order_id, amount, &payment.payment_method)
                        .await;
                    answer = details;
                    Input::Charged(charged)
                }
                (Then::Call(Call::Void), Some(payment)) => Input::Voided(self.refund_or_void(payment.payment_id).await),
            };
        }
    }

    /// The first step, when all it does for a new order is create the
    /// payment and call the provider: one statement instead of a transaction, for
    /// the common case. `None` when the step is another, or the order has a
    /// payment already (a redelivery), for [`Self::step`] to decide under
    /// the lock.
    async fn create_alone(
        &self,
        new: &NewPayment<'_>,
        input: Input,
    ) -> Result<Option<(Then, Option<Payment>)>, HandleError> {
        let decision = domain::decide(None, input, self.max_attempts);
        let (Some(to), Then::Call(_), None) = (decision.to, decision.then, decision.publish) else {
            return Ok(None);
        };
        let created = store::create(&self.pool, new, to, Details::default()).await?;
        Ok(created.map(|payment| (decision.then, Some(payment))))
    }

    /// One decision on `input` in a transaction under the payment's row
    /// lock: the payment's move, the event it publishes, and the inbox claim
    /// when it ends the handling. Returns what follows, and the payment.
    async fn step(
        &self,
        claim: Option<&IncomingEvent>,
        which: Which<'_>,
        input: Input,
        answer: &Answer,
    ) -> Result<(Then, Option<Payment>), HandleError> {
        let mut tx = self.outbox.begin(&self.pool).await?;
        let payment = match which {
            Which::Order(new) => store::lock_by_order(&mut tx, new.order_id).await?,
            Which::Id(payment_id) => store::lock_by_id(&mut tx, payment_id).await?,
        };
        let decision = domain::decide(payment.as_ref().map(|p| p.status), input, self.max_attempts);
        if decision.then == Then::Done
            && let Some(event) = claim
            && !inbox::claim(&mut tx, self.consumer, event).await?
        {
            // A repeat of an event handled already.
            self.outbox.commit(tx).await?;
            return Ok((Then::Done, payment));
        }
        let failure_reason = match decision.publish {
            Some(Publish::Failed(reason)) => reason.as_str().or(answer.declined.as_deref()),
            _ => None,
        };
        let details = Details {
            charge_id: answer.charge_id.as_deref(),
            failure_reason,
            next_action_url: answer.next_action_url.as_deref(),
        };
        let payment = match (payment, decision.to) {
            (Some(payment), Some(to)) => {
                store::update(&mut tx, payment.payment_id, to, details).await?;
                Some(payment)
            }
            (None, Some(to)) => {
                let Which::Order(new) = which else {
                    return Err(HandleError::Reject("no payment to move".into()));
                };
                match store::create(&mut *tx, new, to, details).await? {
                    Some(payment) => Some(payment),
                    None => {
                        return Err(HandleError::Retry(format!(
                            "a payment of order {} was created meanwhile",
                            new.order_id
                        )));
                    }
                }
            }
            (payment, None) => payment,
        };
        if let (Some(publish), Some(payment)) = (decision.publish, &payment) {
            self.publish(&mut tx, payment, publish, details).await?;
        }
        self.outbox.commit(tx).await?;
        Ok((decision.then, payment))
    }

    /// Stages the event `publish` announces about `payment`.
    async fn publish(
        &self,
        tx: &mut Staging,
        payment: &Payment,
        publish: Publish,
        details: Details<'_>,
    ) -> Result<(), HandleError> {
        let (order_id, user_id, payment_id) = (
            payment.order_id.clone(),
            payment.user_id.clone(),
            payment.payment_id.to_string(),
        );
        let amount = Some(shop_proto::common::v1::Money {
            currency_code: payment.currency.clone(),
            amount_minor: payment.amount_minor,
        });
        match publish {
            Publish::Succeeded => {
                let succeeded = ev::PaymentSucceeded {
                    order_id,
                    user_id,
                    payment_id,
                    amount,
                    charged_at: Some(timestamp(Utc::now())),
                };
                self.outbox.enqueue(tx, &succeeded).await?;
            }
            Publish::Failed(_) => {
                let failed = ev::PaymentFailed {
                    order_id,
                    user_id,
                    payment_id,
                    reason: details.failure_reason.unwrap_or_default().to_owned(),
                };
                self.outbox.enqueue(tx, &failed).await?;
            }
            Publish::Awaiting => {
                let awaiting = ev::PaymentAwaiting {
                    order_id,
                    user_id,
                    payment_id,
                    next_action_url: details
                        .next_action_url
                        .or(payment.next_action_url.as_deref())
                        .unwrap_or_default()
                        .to_owned(),
                };
                self.outbox.enqueue(tx, &awaiting).await?;
            }
            Publish::Refunded => {
                // The whole charge, given back after a cancellation.
                let refunded = ev::PaymentRefunded {
                    order_id,
                    user_id,
                    payment_id,
                    amount,
                    refund_id: String::new(),
                };
                self.outbox.enqueue(tx, &refunded).await?;
            }
        }
        Ok(())
    }

    /// The provider's charge, bounded by the provider timeout.
    async fn charge(&self, payment_id: Uuid, order_id: &str, amount: Money, method: &str) -> (ChargeAnswer, Answer) {
        // The provider is another company's system: its time is its own span.
        let call = self
            .provider
            .charge(payment_id, order_id, amount, method)
            .instrument(tracing::info_span!("provider charge", otel.kind = "client", %payment_id));
        let answer = tokio::time::timeout(self.provider_timeout, call)
            .await
            .unwrap_or(Err(ProviderError::Timeout));
        match answer {
            Ok(ChargeOutcome::Succeeded { charge_id }) => (
                ChargeAnswer::Succeeded,
                Answer {
                    charge_id: Some(charge_id),
                    ..Answer::default()
                },
            ),
            Ok(ChargeOutcome::Declined { reason }) => (
                ChargeAnswer::Declined,
                Answer {
                    declined: Some(reason),
                    ..Answer::default()
                },
            ),
            Ok(ChargeOutcome::Awaiting {
                charge_id,
                next_action_url,
            }) => {
                let wait = match next_action_url {
                    Some(_) => Wait::CustomerAction,
                    None => Wait::Processing,
                };
                let answer = Answer {
                    charge_id: Some(charge_id),
                    next_action_url,
                    ..Answer::default()
                };
                (ChargeAnswer::Awaiting(wait), answer)
            }
            Err(error) => {
                tracing::warn!(%payment_id, %error, "charge not answered");
                let answer = match error {
                    ProviderError::Unavailable(_) => ChargeAnswer::Unavailable,
                    ProviderError::Timeout => ChargeAnswer::Timeout,
                };
                (answer, Answer::default())
            }
        }
    }

    /// The provider's refund or void, bounded like a charge.
    async fn refund_or_void(&self, payment_id: Uuid) -> VoidAnswer {
        let call = self
            .provider
            .refund_or_void(payment_id)
            .instrument(tracing::info_span!("provider refund", otel.kind = "client", %payment_id));
        match tokio::time::timeout(self.provider_timeout, call)
            .await
            .unwrap_or(Err(ProviderError::Timeout))
        {
            Ok(()) => VoidAnswer::Done,
            Err(error) => {
                tracing::warn!(%payment_id, %error, "void or refund not done");
                VoidAnswer::Failed
            }
        }
    }
}
