//! Settling what the provider settles in its own time: a charge that was
//! processing, or waited for the customer's authentication, and money
//! captured after its payment ended.
//!
//! The provider says so by webhook ([`crate::webhooks`] stores each one,
//! then hands it here) and in its event list, which [`Settlement::run`]
//! reads on a timer from a checkpoint, so a webhook lost for good delays a
//! payment by one interval at most. Either way only the charge's id is
//! taken from what arrived: the charge is read from the provider, and its
//! state there is what [`crate::domain::decide`] hears ([`Input::Found`]).
//! A stale, repeated, reordered or forged event therefore changes nothing
//! the provider did not do.
//!
//! [`Input::Found`]: crate::domain::Input::Found

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use shop_runtime::{CancellationToken, consumer::HandleError};
use sqlx::PgPool;

use crate::{
    provider::{PaymentProvider, ProviderError, ProviderRecords, ProviderRefunds},
    refund_saga::RefundSaga,
    saga::{Answer, PaymentSaga},
    store::{self, StoreError},
};

/// Provider events one round reads at most (pages of the provider's list);
/// the rest wait for the next round.
const PAGES_PER_ROUND: usize = 10;

/// Stored webhooks one round retries at most.
const WEBHOOKS_PER_ROUND: i64 = 100;

/// A webhook younger than this is still being handled by the call that
/// stored it, not left over.
const WEBHOOK_GRACE: Duration = Duration::from_secs(5);

pub struct Settlement<P> {
    pub pool: PgPool,
    pub provider: Arc<P>,
    /// Decides and applies; its consumer name is not used (nothing here
    /// comes from a stream).
    pub saga: Arc<PaymentSaga<P>>,
    /// Decides and applies what a refund became.
    pub refunds: Arc<RefundSaga<P>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the provider: {0}")]
    Provider(#[from] ProviderError),
    #[error("{0}")]
    Handling(String),
}

impl From<HandleError> for SettleError {
    fn from(e: HandleError) -> Self {
        Self::Handling(e.to_string())
    }
}

/// What one round of reconciliation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Stored webhooks handled now, whose handling had failed or not run.
    pub webhooks: usize,
    /// Provider events read.
    pub events: usize,
    /// Charges read and decided on.
    pub charges: usize,
    /// Another replica holds the round.
    pub skipped: bool,
}

impl<P: PaymentProvider + ProviderRecords + ProviderRefunds> Settlement<P> {
    /// Reads charge `charge_id` from the provider and decides on where it
    /// stands, then on where its pending refunds stand. A charge the
    /// provider does not have, or that is not one of this service's
    /// payments, changes nothing.
    pub async fn settle(&self, charge_id: &str) -> Result<(), SettleError> {
        let Some(reading) = self.provider.read(charge_id).await? else {
            tracing::warn!(charge_id, "the provider has no such charge; nothing to settle");
            return Ok(());
        };
        let Some(payment_id) = reading.payment_id else {
            tracing::info!(charge_id, "a charge that is none of this service's payments");
            return Ok(());
        };
        let answer = Answer {
            charge_id: Some(reading.charge_id),
            declined: reading.declined,
            next_action_url: reading.next_action_url,
        };
        self.saga.apply_found(payment_id, reading.standing, answer).await?;
        for (refund_id, provider_refund_id) in store::pending_refunds(&self.pool, payment_id).await? {
            match self.provider.read_refund(&provider_refund_id).await? {
                Some(refund) => self.refunds.apply_found(&refund_id, refund).await?,
                None => tracing::warn!(refund_id, provider_refund_id, "the provider has no such refund"),
            }
        }
        Ok(())
    }

    /// Handles stored webhook `event_id` about `charge_id`, and records the
    /// outcome: handled, or one more failed attempt for a later round.
    pub async fn handle_webhook(&self, event_id: &str, charge_id: &str) {
        let settled = self.settle(charge_id).await;
        if let Err(e) = &settled {
            tracing::warn!(event_id, charge_id, error = %e, "webhook not handled yet; the next round retries it");
        }
        if let Err(e) = store::mark_webhook(&self.pool, event_id, settled.is_ok()).await {
            tracing::warn!(event_id, error = %e, "cannot record the webhook's handling");
        }
    }

    /// One round: stored webhooks whose handling failed or never ran, then
    /// the provider's events after the checkpoint.
    pub async fn round(&self) -> Result<Round, SettleError> {
        let mut round = Round::default();
        for webhook in store::unhandled_webhooks(&self.pool, WEBHOOK_GRACE, WEBHOOKS_PER_ROUND).await? {
            self.handle_webhook(&webhook.event_id, &webhook.charge_id).await;
            round.webhooks += 1;
        }
        let mut session = self.pool.acquire().await.map_err(StoreError::from)?;
        if !store::try_lock_reconciliation(&mut session).await? {
            round.skipped = true;
            return Ok(round);
        }
        let read = self.read_events(&mut session, &mut round).await;
        let unlocked = store::unlock_reconciliation(&mut session).await;
        read?;
        unlocked?;
        Ok(round)
    }

    /// Reads the provider's events after the checkpoint, settles each
    /// charge they name once, and moves the checkpoint past them.
    async fn read_events(&self, session: &mut sqlx::PgConnection, round: &mut Round) -> Result<(), SettleError> {
        let mut after = store::checkpoint(session).await?;
        for _ in 0..PAGES_PER_ROUND {
            let page = self.provider.events_after(after.as_deref()).await?;
            if page.cursor_lost {
                tracing::warn!(
                    ?after,
                    "the provider no longer has the event read up to; reading its list from the first"
                );
                after = None;
                store::set_checkpoint(session, None).await?;
                continue;
            }
            let Some(last) = page.events.last() else {
                return Ok(());
            };
            round.events += page.events.len();
            let charges: BTreeSet<&str> = page.events.iter().filter_map(|e| e.charge_id.as_deref()).collect();
            for charge_id in charges {
                // Not settled now, not past: the checkpoint stays, and the
                // next round reads the page again.
                self.settle(charge_id).await?;
                round.charges += 1;
            }
            store::set_checkpoint(session, Some(&last.id)).await?;
            after = Some(last.id.clone());
            if !page.has_more {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Runs a round every `interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match self.round().await {
                Ok(round) => {
                    metrics::counter!(shop_runtime::series::RECONCILIATIONS, "result" => "ok").increment(1);
                    if round.charges > 0 || round.webhooks > 0 {
                        tracing::info!(?round, "reconciled with the payment provider");
                    }
                }
                Err(e) => {
                    metrics::counter!(shop_runtime::series::RECONCILIATIONS, "result" => "failed").increment(1);
                    tracing::warn!(error = %e, "reconciliation round failed; the next one tries again");
                }
            }
        }
    }
}
