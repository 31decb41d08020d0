//! svc-order's part of the checkout saga: inventory and payment outcomes
//! move the order through [`crate::domain::decide`], and every move into a
//! terminal status publishes `orders.confirmed` or `orders.cancelled`
//! through the outbox, in the same transaction. `payments.awaiting` records
//! on a reserved order what its payment waits for, and where the customer
//! authenticates it. After confirmation, `payments.refunded` (of a refund:
//! its `refund_id` set) and `payments.refund_failed` settle the refund they
//! name, once ([`crate::refunds`]), and a refund that succeeded moves the
//! order on: PARTIALLY_REFUNDED, or REFUNDED once all of it came back.

use shop_proto::{common::v1::Money as ProtoMoney, events::v1 as ev};
use shop_runtime::{
    consumer::{EventHandler, HandleError},
    event::{self, IncomingEvent},
    inbox,
    outbox::{Outbox, Staging},
    series,
    values::timestamp,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    domain::{Decision, Heard, NextActionUrl, PaymentWait, PlaceOrder, PricedOrder, Status, Trigger, decide},
    refunds::{Outcome, Settlement},
    store::{self, OrderRecord, RefundRecord, StoreError},
};

pub const INVENTORY_CONSUMER: &str = "order-inventory";
pub const PAYMENTS_CONSUMER: &str = "order-payments";

/// The outcome of applying a trigger to an order.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Moved {
        from: Status,
        to: Status,
        placed_at: chrono::DateTime<chrono::Utc>,
        /// The order's `updated_at` as this move set it.
        at: chrono::DateTime<chrono::Utc>,
        /// Where the customer authenticates the payment, when `to` waits
        /// for them.
        next_action_url: Option<NextActionUrl>,
    },
    Ignored,
    Refused(&'static str),
    Missing,
}

/// `orders.placed`, which starts the saga of a new order: its priced lines
/// and what to charge, so that inventory and payment need not ask.
pub(crate) fn placed(order_id: Uuid, user_id: &str, command: &PlaceOrder, priced: &PricedOrder) -> ev::OrderPlaced {
    ev::OrderPlaced {
        order_id: order_id.to_string(),
        user_id: user_id.to_owned(),
        lines: priced
            .lines
            .iter()
            .map(|l| ev::EventLine {
                sku: l.sku.to_string(),
                quantity: l.quantity.get(),
                unit_price: Some(l.unit_price.to_proto()),
            })
            .collect(),
        total: Some(priced.total.to_proto()),
        payment_method: command.payment_method.to_string(),
        placed_at: Some(timestamp(chrono::Utc::now())),
    }
}

/// `orders.refund_requested` for a refund just recorded of `order`: what
/// to give back (svc-payment) and, with `restock`, which units go back in
/// stock (svc-inventory).
pub(crate) fn refund_requested(order: &OrderRecord, refund: &RefundRecord) -> ev::OrderRefundRequested {
    let money = |amount_minor| ProtoMoney {
        currency_code: refund.currency.clone(),
        amount_minor,
    };
    ev::OrderRefundRequested {
        order_id: order.order_id.to_string(),
        user_id: order.user_id.clone(),
        refund_id: refund.refund_id.to_string(),
        amount: Some(money(refund.amount_minor)),
        lines: refund
            .lines
            .iter()
            .map(|l| ev::EventLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: Some(money(l.unit_price_minor)),
            })
            .collect(),
        restock: refund.restock,
    }
}

/// Applies `trigger` to the order under a row lock, publishing the
/// resulting event (if any) through `outbox` in the caller's transaction.
pub async fn apply(
    conn: &mut Staging,
    outbox: &Outbox,
    order_id: Uuid,
    trigger: Trigger,
) -> Result<Applied, StoreError> {
    apply_with(conn, outbox, order_id, trigger, None).await
}

/// [`apply`], with where the customer authenticates the payment when the
/// trigger is a payment awaiting them: the order keeps it while it waits.
pub async fn apply_with(
    conn: &mut Staging,
    outbox: &Outbox,
    order_id: Uuid,
    trigger: Trigger,
    next_action_url: Option<NextActionUrl>,
) -> Result<Applied, StoreError> {
    let Some(order) = store::lock(conn, order_id).await? else {
        return Ok(Applied::Missing);
    };
    let (from, user_id) = (order.status, order.user_id);
    let to = match decide(from, trigger) {
        Decision::Move(to) => to,
        Decision::Ignore => return Ok(Applied::Ignored),
        Decision::Refuse(why) => return Ok(Applied::Refused(why)),
    };
    // Only a payment awaiting the customer moves into waiting for them.
    let next_action_url = match to {
        Status::Reserved(Some(PaymentWait::CustomerAction)) => match next_action_url {
            Some(url) => Some(url),
            None => {
                return Ok(Applied::Refused(
                    "a payment awaiting the customer needs the URL where they act",
                ));
            }
        },
        _ => None,
    };
    let at = store::set_status(conn, order_id, to, next_action_url.as_ref()).await?;
    let total =
        store::currency(&order.currency).map(|c| shop_runtime::values::Money::new(c, order.total_minor).to_proto());
    let now = timestamp(chrono::Utc::now());
    match to {
        Status::Confirmed => {
            let confirmed = ev::OrderConfirmed {
                order_id: order_id.to_string(),
                user_id,
                total,
                confirmed_at: Some(now),
            };
            outbox.enqueue(conn, &confirmed).await?;
        }
        Status::Cancelled(reason) => {
            let cancelled = ev::OrderCancelled {
                order_id: order_id.to_string(),
                user_id,
                reason: crate::contract::cancel_reason(reason) as i32,
                total,
                cancelled_at: Some(now),
            };
            outbox.enqueue(conn, &cancelled).await?;
        }
        // svc-payment announces what a refund gave back.
        Status::Pending | Status::Reserved(_) | Status::PartiallyRefunded | Status::Refunded => {}
    }
    Ok(Applied::Moved {
        from,
        to,
        placed_at: order.created_at,
        at,
        next_action_url,
    })
}

/// What follows the commit of an applied trigger: watchers of a moved order
/// are told, and a settled order is counted and timed
/// ([`series::ORDERS`], [`series::ORDER_SETTLE_SECONDS`]). After the
/// commit, so a transaction that fails counts nothing.
pub(crate) async fn committed(applied: &Applied, announcer: &crate::watch::Announcer, order_id: Uuid) {
    let Applied::Moved {
        to,
        placed_at,
        at,
        next_action_url,
        ..
    } = applied
    else {
        return;
    };
    let change = crate::watch::Change {
        status: *to,
        at: *at,
        next_action_url: next_action_url.as_ref().map(|url| url.as_str().to_owned()),
    };
    announcer.changed(order_id, change).await;
    let (status, reason) = match to {
        Status::Confirmed => ("confirmed", ""),
        Status::Cancelled(reason) => ("cancelled", reason.as_str()),
        // Settled long before: a refund is no settlement.
        Status::Pending | Status::Reserved(_) | Status::PartiallyRefunded | Status::Refunded => return,
    };
    metrics::counter!(series::ORDERS, "status" => status, "reason" => reason).increment(1);
    let took = (chrono::Utc::now() - *placed_at).to_std().unwrap_or_default();
    metrics::histogram!(series::ORDER_SETTLE_SECONDS, "status" => status).record(took.as_secs_f64());
}

/// Counts an order just placed (after its commit).
pub(crate) fn count_placed() {
    metrics::counter!(series::ORDERS, "status" => "placed", "reason" => "").increment(1);
}

pub struct OrderSaga {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub announcer: crate::watch::Announcer,
    pub consumer: &'static str,
}

impl From<StoreError> for HandleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(e) => e.into(),
            StoreError::CorruptStatus(_) | StoreError::CorruptLines(_) | StoreError::CorruptRefund(_) => {
                HandleError::Reject(e.to_string())
            }
            StoreError::Outbox(e) => e.into(),
        }
    }
}

/// svc-payment's word on a refund of a confirmed order.
struct RefundSettled {
    order_id: String,
    refund_id: String,
    outcome: Outcome,
    /// What it gave back, as svc-payment says.
    amount: Option<ProtoMoney>,
    /// Why it failed, when it did.
    reason: Option<String>,
}

impl OrderSaga {
    /// Settles the refund `settled` names, once: the refund becomes
    /// succeeded or failed, and the order hears it through [`decide`]
    /// under its row lock, so refunds of one order settle one after the
    /// other. A repeat changes nothing; word that contradicts how the
    /// refund settled, or of a refund the order does not have, is parked.
    async fn settle_refund(&self, event: &IncomingEvent, settled: RefundSettled) -> Result<(), HandleError> {
        let order_id = event::order_id(&settled.order_id)?.uuid();
        let refund_id = uuid::Uuid::parse_str(&settled.refund_id)
            .map_err(|_| HandleError::Reject(format!("refund_id {:?} is not a refund id", settled.refund_id)))?;
        let mut tx = self.outbox.begin(&self.pool).await?;
        if !inbox::claim(&mut tx, self.consumer, event).await? {
            return Ok(());
        }
        // The lock first: the order's refunds as they stand under it.
        if store::lock(&mut tx, order_id).await?.is_none() {
            return Err(HandleError::Retry(format!("order {order_id} not found")));
        }
        let Some(order) = store::load(&mut tx, order_id).await? else {
            return Err(HandleError::Retry(format!("order {order_id} not found")));
        };
        let ours = order.refunds.iter().find(|r| r.refund_id == refund_id);
        if let (Some(ours), Some(amount)) = (ours, &settled.amount)
            && (amount.amount_minor, amount.currency_code.as_str()) != (ours.amount_minor, ours.currency.as_str())
        {
            tracing::warn!(%order_id, %refund_id, ?amount, ours = ours.amount_minor, "refund settled with another amount");
        }
        let applied = match order.refundable()?.settle(refund_id, settled.outcome) {
            Settlement::Settle { to, trigger } => {
                store::settle_refund(&mut tx, refund_id, to, settled.reason.as_deref()).await?;
                tracing::info!(%order_id, %refund_id, status = to.as_str(), "refund settled");
                apply(&mut tx, &self.outbox, order_id, trigger).await?
            }
            Settlement::Repeat => {
                tracing::debug!(%order_id, %refund_id, "refund settled already");
                Applied::Ignored
            }
            // Books that disagree with the provider's: parked for an
            // operator, the refund left as it is.
            Settlement::Contradicts(settled_as) => {
                return Err(HandleError::Reject(format!(
                    "refund {refund_id} of order {order_id} is {} already; svc-payment now says {:?}",
                    settled_as.as_str(),
                    settled.outcome
                )));
            }
            Settlement::Unknown => {
                return Err(HandleError::Reject(format!(
                    "order {order_id} has no refund {refund_id}"
                )));
            }
        };
        if let Applied::Moved { from, to, .. } = &applied {
            tracing::info!(%order_id, ?from, ?to, "order moved");
        }
        self.outbox.commit(tx).await?;
        committed(&applied, &self.announcer, order_id).await;
        Ok(())
    }
}

impl EventHandler for OrderSaga {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
        if event.is::<ev::PaymentRefunded>() {
            let refunded: ev::PaymentRefunded = event.decode()?;
            // A cancelled order's charge given back: nothing to settle.
            if refunded.refund_id.is_empty() {
                return Ok(());
            }
            let settled = RefundSettled {
                order_id: refunded.order_id,
                refund_id: refunded.refund_id,
                outcome: Outcome::Succeeded,
                amount: refunded.amount,
                reason: None,
            };
            return self.settle_refund(&event, settled).await;
        }
        if event.is::<ev::PaymentRefundFailed>() {
            let failed: ev::PaymentRefundFailed = event.decode()?;
            let settled = RefundSettled {
                order_id: failed.order_id,
                refund_id: failed.refund_id,
                outcome: Outcome::Failed,
                amount: failed.amount,
                reason: Some(failed.reason),
            };
            return self.settle_refund(&event, settled).await;
        }
        let mut next_action_url = None;
        let (id, heard) = if event.is::<ev::InventoryReserved>() {
            (
                event.decode::<ev::InventoryReserved>()?.order_id,
                Heard::InventoryReserved,
            )
        } else if event.is::<ev::InventoryRejected>() {
            (
                event.decode::<ev::InventoryRejected>()?.order_id,
                Heard::InventoryRejected,
            )
        } else if event.is::<ev::InventoryCommitted>() {
            (
                event.decode::<ev::InventoryCommitted>()?.order_id,
                Heard::InventoryCommitted,
            )
        } else if event.is::<ev::InventoryReleased>() {
            let released: ev::InventoryReleased = event.decode()?;
            let expired = released.reason == ev::ReleaseReason::Expired as i32;
            (released.order_id, Heard::InventoryReleased { expired })
        } else if event.is::<ev::PaymentFailed>() {
            (event.decode::<ev::PaymentFailed>()?.order_id, Heard::PaymentFailed)
        } else if event.is::<ev::PaymentAwaiting>() {
            let awaiting: ev::PaymentAwaiting = event.decode()?;
            let action = !awaiting.next_action_url.is_empty();
            if action {
                let url = awaiting
                    .next_action_url
                    .parse::<NextActionUrl>()
                    .map_err(|why| HandleError::Reject(format!("next_action_url: {why}")))?;
                next_action_url = Some(url);
            }
            (awaiting.order_id, Heard::PaymentAwaiting { action })
        } else {
            return Err(HandleError::unknown_type(&event));
        };
        let Some(trigger) = heard.trigger() else {
            return Ok(());
        };
        let id = event::order_id(&id)?.uuid();

        let mut tx = self.outbox.begin(&self.pool).await?;
        if !inbox::claim(&mut tx, self.consumer, &event).await? {
            return Ok(());
        }
        let applied = apply_with(&mut tx, &self.outbox, id, trigger, next_action_url).await?;
        match applied {
            Applied::Moved { from, to, .. } => tracing::info!(order_id = %id, ?from, ?to, "order moved"),
            Applied::Ignored => tracing::debug!(order_id = %id, ?trigger, "stale event ignored"),
            Applied::Refused(why) => tracing::warn!(order_id = %id, ?trigger, why, "event refused by state machine"),
            Applied::Missing => return Err(HandleError::Retry(format!("order {id} not found"))),
        }
        self.outbox.commit(tx).await?;
        committed(&applied, &self.announcer, id).await;
        Ok(())
    }
}
