//! The order deadline: an order still pending or reserved `ORDER_DEADLINE`
//! after it was placed is cancelled `TIMED_OUT` through the state machine
//! (`PAYMENT_NOT_AUTHENTICATED` when its payment waits for the customer),
//! so every order reaches a terminal status however long a dependency or
//! the customer stays away. Its `orders.cancelled` does the rest: inventory gives the stock
//! back, payment refunds or voids whatever was charged. The deadline sits
//! under the reservation TTL: the order's owner decides when an order has
//! waited long enough, and the reservation's expiry is the backstop.

use std::time::Duration;

use shop_runtime::CancellationToken;
use shop_runtime::outbox::Outbox;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    domain::Trigger,
    saga::{self, Applied},
    store::{self, StoreError},
    watch::Announcer,
};

/// What the sweep works with.
pub struct Deadline {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub announcer: Announcer,
    /// `ORDER_DEADLINE`.
    pub after: Duration,
}

/// Orders one sweep cancels at most; the rest wait for the next.
const SWEEP_BATCH: i64 = 100;

/// Cancels overdue orders every `interval` until `shutdown`.
pub async fn run(deadline: Deadline, interval: Duration, shutdown: CancellationToken) {
    loop {
        match sweep_once(&deadline).await {
            Ok(0) => {}
            Ok(cancelled) => tracing::warn!(cancelled, after = ?deadline.after, "orders past their deadline cancelled"),
            Err(e) => tracing::warn!(error = %e, "order deadline sweep failed; will retry"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One sweep, each order in a transaction of its own; how many it
/// cancelled. An order that cannot be cancelled now (its row locked past
/// `lock_timeout` by a stalled transaction, a failing statement) is logged
/// and skipped, holding up no other; the next sweep tries it again.
pub async fn sweep_once(deadline: &Deadline) -> Result<usize, StoreError> {
    let mut cancelled = 0;
    for order_id in store::overdue(&deadline.pool, deadline.after, SWEEP_BATCH).await? {
        match cancel(deadline, order_id).await {
            Ok(true) => cancelled += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(%order_id, error = %e, "cannot cancel an order past its deadline; skipping it");
                metrics::counter!(shop_runtime::series::ORDER_DEADLINE_FAILURES).increment(1);
            }
        }
    }
    Ok(cancelled)
}

async fn cancel(saga: &Deadline, order_id: Uuid) -> Result<bool, StoreError> {
    let mut tx = saga.outbox.begin(&saga.pool).await?;
    // Under the row lock: an event that settled it meanwhile wins.
    let applied = saga::apply(&mut tx, &saga.outbox, order_id, Trigger::Overdue).await?;
    saga.outbox.commit(tx).await?;
    let moved = matches!(applied, Applied::Moved { .. });
    if moved {
        tracing::warn!(%order_id, "order cancelled: not settled by its deadline");
    }
    saga::committed(&applied, &saga.announcer, order_id).await;
    Ok(moved)
}
