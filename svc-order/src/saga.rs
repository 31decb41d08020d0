//! svc-order's part of the checkout saga: inventory and payment outcomes
//! move the order through [`crate::domain::decide`], and every move into a
//! terminal status publishes `orders.confirmed` or `orders.cancelled`
//! through the outbox, in the same transaction. `payments.awaiting` records
//! on a reserved order what its payment waits for, and where the customer
//! authenticates it.

use shop_proto::events::v1 as ev;
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
    store::{self, StoreError},
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
            StoreError::CorruptStatus(_) | StoreError::CorruptLines(_) => HandleError::Reject(e.to_string()),
            StoreError::Outbox(e) => e.into(),
        }
    }
}

impl EventHandler for OrderSaga {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
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
