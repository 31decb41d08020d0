//! Refunds of confirmed orders: `orders.refund_requested` → provider
//! refund → `payments.refunded` (with the refund's id and amount) |
//! `payments.refund_failed`. What each step means is
//! [`crate::refunds::decide`]'s; this module applies it, the way
//! [`crate::saga`] applies the payment's machine: decide under the row
//! lock, commit, call the provider, decide on its answer.

use std::{sync::Arc, time::Duration};

use shop_proto::{common::v1::Money as ProtoMoney, events::v1 as ev};
use shop_runtime::{
    consumer::{EventHandler, HandleError},
    event::{self, IncomingEvent},
    inbox,
    outbox::Outbox,
};
use sqlx::PgPool;
use tracing::Instrument;

use crate::{
    domain::Status as PaymentStatus,
    provider::{ProviderError, ProviderRefunds, RefundReading},
    refunds::{self, Answer, Input, Publish, Then},
    store::{self, Refund},
};

pub const REFUNDS_CONSUMER: &str = "payment-refunds";

/// Provider refunds that may fail before a refund is shown failed.
pub const REFUND_ATTEMPTS: u32 = 3;

pub struct RefundSaga<P> {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub provider: Arc<P>,
    /// How long one provider call may take.
    pub provider_timeout: Duration,
}

impl<P: ProviderRefunds> EventHandler for RefundSaga<P> {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
        if !event.is::<ev::OrderRefundRequested>() {
            return Err(HandleError::unknown_type(&event));
        }
        let requested: ev::OrderRefundRequested = event.decode()?;
        let order_id = event::order_id(&requested.order_id)?.to_string();
        let amount = requested
            .amount
            .filter(|m| m.amount_minor > 0)
            .ok_or_else(|| HandleError::Reject("a refund needs a positive amount".into()))?;
        if requested.refund_id.is_empty() {
            return Err(HandleError::Reject("a refund needs its id".into()));
        }
        let new = NewRefund {
            refund_id: &requested.refund_id,
            order_id: &order_id,
            user_id: &requested.user_id,
            amount: &amount,
        };
        self.run(Some(&event), &requested.refund_id, Some(&new), None).await
    }
}

/// A refund as `orders.refund_requested` asks for it.
struct NewRefund<'a> {
    refund_id: &'a str,
    order_id: &'a str,
    user_id: &'a str,
    amount: &'a ProtoMoney,
}

impl<P: ProviderRefunds> RefundSaga<P> {
    /// Decides on what the provider shows of refund `refund_id` now (after
    /// a webhook, or by reconciliation).
    pub async fn apply_found(&self, refund_id: &str, reading: RefundReading) -> Result<(), HandleError> {
        self.run(None, refund_id, None, Some(reading)).await
    }

    /// From the event (`new`), or a reading, on: each decision in a
    /// transaction of its own, each provider call between two of them.
    async fn run(
        &self,
        claim: Option<&IncomingEvent>,
        refund_id: &str,
        new: Option<&NewRefund<'_>>,
        mut reading: Option<RefundReading>,
    ) -> Result<(), HandleError> {
        loop {
            let (then, refund) = self.step(claim, refund_id, new, reading.as_ref()).await?;
            match (then, refund) {
                (Then::Done, _) => return Ok(()),
                (Then::Retry(why), _) => return Err(HandleError::Retry(why.to_owned())),
                (Then::Call { .. }, None) => return Err(HandleError::Reject("no refund to ask for".into())),
                (Then::Call { attempt }, Some(refund)) => reading = Some(self.ask(&refund, attempt).await),
            }
        }
    }

    /// One decision in a transaction under the refund's row lock.
    /// `reading`: what the provider answered or shows; without one, the
    /// input is the event `new`.
    async fn step(
        &self,
        claim: Option<&IncomingEvent>,
        refund_id: &str,
        new: Option<&NewRefund<'_>>,
        reading: Option<&RefundReading>,
    ) -> Result<(Then, Option<Refund>), HandleError> {
        let mut tx = self.outbox.begin(&self.pool).await?;
        let mut refund = store::lock_refund(&mut tx, refund_id).await?;
        // The captured payment a new refund is recorded against.
        let payment = match (&refund, new, reading) {
            (None, Some(new), None) => store::lock_by_order(&mut tx, new.order_id)
                .await?
                .filter(|p| p.status == PaymentStatus::Succeeded && p.charge_id.is_some()),
            _ => None,
        };
        let input = match reading {
            Some(reading) => Input::Provider(reading.state),
            None => Input::Requested {
                captured: refund.is_some() || payment.is_some(),
            },
        };
        let decision = refunds::decide(refund.as_ref().map(|r| r.status), input, REFUND_ATTEMPTS);
        if let (None, Some(new), Some(payment), Some(to)) = (&refund, new, &payment, decision.to) {
            refund = Some(self.record(&mut tx, new, payment.payment_id, to).await?);
        }
        if decision.then == Then::Done
            && let Some(event) = claim
            && !inbox::claim(&mut tx, REFUNDS_CONSUMER, event).await?
        {
            self.outbox.commit(tx).await?;
            return Ok((Then::Done, refund));
        }
        let reason = reading.and_then(|r| r.reason.as_deref());
        if let (Some(current), Some(to)) = (&refund, decision.to)
            && Some(current.status) != Some(to)
        {
            let provider_refund_id = reading.and_then(|r| r.refund_id.as_deref());
            store::update_refund(&mut tx, refund_id, to, provider_refund_id, reason).await?;
        }
        match (decision.publish, &refund, new) {
            (Some(publish), Some(refund), _) => self.publish(&mut tx, refund, publish, reason).await?,
            (Some(Publish::Failed), None, Some(new)) => {
                let failed = ev::PaymentRefundFailed {
                    order_id: new.order_id.to_owned(),
                    user_id: new.user_id.to_owned(),
                    payment_id: String::new(),
                    refund_id: new.refund_id.to_owned(),
                    amount: Some(new.amount.clone()),
                    reason: "no captured payment to refund".into(),
                };
                self.outbox.enqueue(&mut tx, &failed).await?;
            }
            _ => {}
        }
        self.outbox.commit(tx).await?;
        Ok((decision.then, refund))
    }

    /// Records the refund against the captured payment `payment_id`.
    async fn record(
        &self,
        tx: &mut sqlx::PgConnection,
        new: &NewRefund<'_>,
        payment_id: uuid::Uuid,
        status: refunds::Status,
    ) -> Result<Refund, HandleError> {
        let refund = Refund {
            refund_id: new.refund_id.to_owned(),
            payment_id,
            order_id: new.order_id.to_owned(),
            user_id: new.user_id.to_owned(),
            amount_minor: new.amount.amount_minor,
            currency: new.amount.currency_code.clone(),
            status,
            failure_reason: None,
        };
        store::create_refund(tx, &refund, status).await?;
        Ok(refund)
    }

    async fn publish(
        &self,
        tx: &mut shop_runtime::outbox::Staging,
        refund: &Refund,
        publish: Publish,
        reason: Option<&str>,
    ) -> Result<(), HandleError> {
        let amount = Some(ProtoMoney {
            currency_code: refund.currency.clone(),
            amount_minor: refund.amount_minor,
        });
        match publish {
            Publish::Refunded => {
                let refunded = ev::PaymentRefunded {
                    order_id: refund.order_id.clone(),
                    user_id: refund.user_id.clone(),
                    payment_id: refund.payment_id.to_string(),
                    amount,
                    refund_id: refund.refund_id.clone(),
                };
                self.outbox.enqueue(tx, &refunded).await?;
            }
            Publish::Failed => {
                let failed = ev::PaymentRefundFailed {
                    order_id: refund.order_id.clone(),
                    user_id: refund.user_id.clone(),
                    payment_id: refund.payment_id.to_string(),
                    refund_id: refund.refund_id.clone(),
                    amount,
                    reason: reason
                        .or(refund.failure_reason.as_deref())
                        .unwrap_or("refund failed")
                        .to_owned(),
                };
                self.outbox.enqueue(tx, &failed).await?;
            }
        }
        Ok(())
    }

    /// Asks the provider for attempt `attempt` of `refund`, bounded by the
    /// provider timeout.
    async fn ask(&self, refund: &Refund, attempt: u32) -> RefundReading {
        let key = match attempt {
            0 => refund.refund_id.clone(),
            n => format!("{}-{n}", refund.refund_id),
        };
        let unanswered = RefundReading {
            refund_id: None,
            state: Answer::Unanswered,
            reason: None,
        };
        // Recorded against a captured payment, whose charge is known.
        let charge_id = match store::find_by_order(&self.pool, &refund.order_id).await {
            Ok(Some(payment)) => payment.charge_id,
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the refund's charge");
                None
            }
        };
        let Some(charge_id) = charge_id else {
            return unanswered;
        };
        let call = self
            .provider
            .refund(&key, &charge_id, refund.amount_minor)
            .instrument(tracing::info_span!("provider refund", otel.kind = "client", refund_id = %refund.refund_id));
        match tokio::time::timeout(self.provider_timeout, call)
            .await
            .unwrap_or(Err(ProviderError::Timeout))
        {
            Ok(reading) => reading,
            Err(error) => {
                tracing::warn!(refund_id = %refund.refund_id, %error, "refund not answered");
                unanswered
            }
        }
    }
}
