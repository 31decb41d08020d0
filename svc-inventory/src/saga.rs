//! svc-inventory's part of the checkout saga:
//! `orders.placed` → reserve → `inventory.reserved` | `inventory.rejected`;
//! `payments.succeeded` → commit → `inventory.committed`;
//! `payments.failed` / `orders.cancelled` / deadline → release → `inventory.released`.

use std::{collections::BTreeMap, time::Duration};

use shop_proto::events::v1 as ev;
use shop_runtime::{
    CancellationToken,
    consumer::{EventHandler, HandleError},
    event::IncomingEvent,
    inbox,
    outbox::{Outbox, Staging},
    values::{Quantity, Sku},
};
use sqlx::PgPool;

use crate::stock::{self, Line, ReleaseReason, Reservation, Settlement};

pub const ORDERS_CONSUMER: &str = "inventory-orders";
pub const PAYMENTS_CONSUMER: &str = "inventory-payments";

pub struct InventorySaga {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub reservation_ttl: Duration,
    /// The durable consumer this instance serves (the inbox is per consumer).
    pub consumer: &'static str,
}

impl EventHandler for InventorySaga {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
        let mut tx = self.outbox.begin(&self.pool).await?;
        if !inbox::claim(&mut tx, self.consumer, &event).await? {
            return Ok(());
        }
        if event.is::<ev::OrderPlaced>() {
            self.on_order_placed(&mut tx, event.decode()?).await?;
        } else if event.is::<ev::OrderCancelled>() {
            let e: ev::OrderCancelled = event.decode()?;
            self.release(&mut tx, &e.order_id, &e.user_id, ReleaseReason::OrderCancelled)
                .await?;
        } else if event.is::<ev::PaymentSucceeded>() {
            let e: ev::PaymentSucceeded = event.decode()?;
            match stock::commit(&mut tx, &e.order_id).await? {
                Settlement::Done { user_id } => {
                    let committed = ev::InventoryCommitted {
                        order_id: e.order_id,
                        user_id,
                    };
                    self.outbox.enqueue(&mut tx, &committed).await?;
                }
                // Released already (expired or cancelled): the order is or
                // will be cancelled and the payment refunded.
                Settlement::Unchanged => {}
                Settlement::Missing => {
                    return Err(HandleError::Retry(format!(
                        "no reservation for order {} yet",
                        e.order_id
                    )));
                }
            }
        } else if event.is::<ev::PaymentFailed>() {
            let e: ev::PaymentFailed = event.decode()?;
            if self
                .release(&mut tx, &e.order_id, &e.user_id, ReleaseReason::PaymentFailed)
                .await?
                == Settlement::Missing
            {
                return Err(HandleError::Retry(format!(
                    "no reservation for order {} yet",
                    e.order_id
                )));
            }
        } else {
            return Err(HandleError::unknown_type(&event));
        }
        self.outbox.commit(tx).await?;
        Ok(())
    }
}

impl InventorySaga {
    async fn on_order_placed(&self, tx: &mut Staging, placed: ev::OrderPlaced) -> Result<(), HandleError> {
        let lines = lines_of(&placed)?;
        match stock::reserve(tx, &placed.order_id, &placed.user_id, &lines, self.reservation_ttl).await? {
            Reservation::Held { expires_at } => {
                let reserved = ev::InventoryReserved {
                    order_id: placed.order_id,
                    user_id: placed.user_id,
                    lines: placed.lines,
                    total: placed.total,
                    payment_method: placed.payment_method,
                    expires_at: Some(shop_runtime::values::timestamp(expires_at)),
                };
                self.outbox.enqueue(tx, &reserved).await?;
            }
            Reservation::Rejected(shortages) => {
                let rejected = ev::InventoryRejected {
                    order_id: placed.order_id,
                    user_id: placed.user_id,
                    unavailable: shortages
                        .into_iter()
                        .map(|s| ev::UnavailableLine {
                            sku: s.sku,
                            requested: s.requested,
                            available: s.available,
                        })
                        .collect(),
                };
                self.outbox.enqueue(tx, &rejected).await?;
            }
            Reservation::AlreadyKnown => {}
        }
        Ok(())
    }

    async fn release(
        &self,
        tx: &mut Staging,
        order_id: &str,
        user_id: &str,
        reason: ReleaseReason,
    ) -> Result<Settlement, HandleError> {
        let settlement = stock::release(tx, order_id, user_id, reason).await?;
        if let Settlement::Done { user_id } = &settlement {
            let released = ev::InventoryReleased {
                order_id: order_id.to_owned(),
                user_id: user_id.clone(),
                reason: match reason {
                    ReleaseReason::Expired => ev::ReleaseReason::Expired,
                    ReleaseReason::PaymentFailed => ev::ReleaseReason::PaymentFailed,
                    ReleaseReason::OrderCancelled => ev::ReleaseReason::OrderCancelled,
                } as i32,
            };
            self.outbox.enqueue(tx, &released).await?;
        }
        Ok(settlement)
    }
}

/// The lines of an `orders.placed` event, validated and merged by SKU. A
/// malformed event can never be reserved: it goes to the DLQ.
fn lines_of(placed: &ev::OrderPlaced) -> Result<Vec<Line>, HandleError> {
    if placed.lines.is_empty() {
        return Err(HandleError::Reject(format!("order {} has no lines", placed.order_id)));
    }
    let mut merged: BTreeMap<Sku, i32> = BTreeMap::new();
    for line in &placed.lines {
        let sku = Sku::parse(&line.sku).map_err(|why| HandleError::Reject(format!("line sku {why}")))?;
        let total = merged.entry(sku).or_default();
        *total = total.saturating_add(line.quantity);
    }
    merged
        .into_iter()
        .map(|(sku, quantity)| {
            Quantity::new(quantity)
                .map(|quantity| Line { sku, quantity })
                .map_err(|why| HandleError::Reject(format!("line quantity {why}")))
        })
        .collect()
}

/// Releases reservations past their deadline until `shutdown`.
pub async fn sweep_expired(saga: InventorySaga, interval: Duration, shutdown: CancellationToken) {
    loop {
        match sweep_once(&saga).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "released expired reservations"),
            Err(e) => tracing::warn!(error = %e, "reservation sweep failed; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Reservations one sweep releases at most; the rest wait for the next.
const SWEEP_BATCH: usize = 100;

/// One sweep: releases expired reservations, oldest first, each in a
/// transaction of its own. A transaction then locks one reservation's stock
/// rows, in SKU order as reserving and committing do, so sweepers (one per
/// replica) and the saga cannot deadlock; and a reservation that cannot be
/// released is logged and skipped, holding up no other. Returns how many
/// were released.
pub async fn sweep_once(saga: &InventorySaga) -> Result<usize, HandleError> {
    let mut released = 0;
    let mut skipped: Vec<String> = Vec::new();
    while released + skipped.len() < SWEEP_BATCH {
        let mut tx = saga.outbox.begin(&saga.pool).await?;
        let Some((order_id, user_id)) = stock::claim_expired(&mut tx, &skipped).await? else {
            break;
        };
        match saga.release(&mut tx, &order_id, &user_id, ReleaseReason::Expired).await {
            Ok(_) => {
                saga.outbox.commit(tx).await?;
                released += 1;
            }
            Err(e) => {
                drop(tx);
                tracing::error!(order_id, error = %e, "cannot release an expired reservation; skipping it");
                metrics::counter!(shop_runtime::series::RESERVATION_RELEASE_FAILURES).increment(1);
                skipped.push(order_id);
            }
        }
    }
    Ok(released)
}
