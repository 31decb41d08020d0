//! Live order status for `WatchOrder`, across replicas.
//!
//! Whichever replica changes an order announces it on the core NATS subject
//! `order-updates.<order_id>` right after its commit (outside the JetStream
//! streams: a notification, not an event). A watcher subscribes before it
//! reads the order, so no change can slip between the read and the
//! subscription, and re-reads from the database on every announcement —
//! the database stays the only source of truth. Core NATS may drop a
//! notification (a reconnect), so watchers also re-read every few seconds.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc};
use tonic::Status;
use uuid::Uuid;

use crate::store::{self, OrderRecord};

/// How often a watcher re-reads even without an announcement.
const SAFETY_NET: Duration = Duration::from_secs(2);
/// Longest a single watch lasts; a client can watch again.
const MAX_WATCH: Duration = Duration::from_secs(3600);

fn subject(order_id: Uuid) -> String {
    format!("order-updates.{order_id}")
}

/// Announces order changes to watchers on every replica, and admits at
/// most so many watches at once on this one (each re-reads the database
/// every `SAFETY_NET`).
#[derive(Clone)]
pub struct Announcer {
    nats: async_nats::Client,
    watches: Arc<Semaphore>,
}

impl Announcer {
    pub fn new(nats: async_nats::Client, max_watches: usize) -> Self {
        Self {
            nats,
            watches: Arc::new(Semaphore::new(max_watches)),
        }
    }

    /// Best effort: a lost announcement only delays watchers until their
    /// next safety-net read.
    pub async fn changed(&self, order_id: Uuid) {
        if let Err(e) = self.nats.publish(subject(order_id), bytes::Bytes::new()).await {
            tracing::debug!(%order_id, error = %e, "order change not announced");
        }
    }

    /// Streams the order now and after every change until it is terminal.
    /// `first` is the caller's read of the order (which checks that it is
    /// theirs to see); it runs once the subscription is in place, so it is
    /// the first state sent.
    pub async fn watch<F, R>(
        &self,
        pool: PgPool,
        order_id: Uuid,
        first: R,
        to_proto: F,
    ) -> Result<mpsc::Receiver<Result<shop_proto::order::v1::Order, Status>>, Status>
    where
        F: Fn(OrderRecord) -> shop_proto::order::v1::Order + Send + 'static,
        R: std::future::Future<Output = Result<OrderRecord, Status>>,
    {
        let place = self.watches.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "too many orders are watched on this server right now; poll GetOrder, or watch again shortly",
            )
        })?;
        let mut updates = self.nats.subscribe(subject(order_id)).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot subscribe to order updates");
            Status::unavailable("order updates are temporarily unavailable; poll GetOrder")
        })?;
        let mut first = Some(first.await?);
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            // Given back when the watch ends, however it ends.
            let _place = place;
            let deadline = tokio::time::Instant::now() + MAX_WATCH;
            let mut last_sent: Option<(crate::domain::Status, chrono::DateTime<chrono::Utc>)> = None;
            loop {
                let order = match first.take() {
                    Some(order) => Some(order),
                    None => match pool.acquire().await {
                        Ok(mut conn) => store::load(&mut conn, order_id).await.ok().flatten(),
                        Err(_) => None,
                    },
                };
                if let Some(order) = order {
                    let seen = (order.status, order.updated_at);
                    let terminal = order.status.is_terminal();
                    if last_sent != Some(seen) {
                        last_sent = Some(seen);
                        if tx.send(Ok(to_proto(order))).await.is_err() {
                            return; // the client went away
                        }
                    }
                    if terminal {
                        return;
                    }
                }
                tokio::select! {
                    _ = updates.next() => {}
                    () = tokio::time::sleep(SAFETY_NET) => {}
                    () = tx.closed() => return,
                    () = tokio::time::sleep_until(deadline) => return,
                }
            }
        });
        Ok(rx)
    }
}
