//! Live order status for `WatchOrder`, across replicas.
//!
//! Whichever replica changes an order announces the change on the core NATS
//! subject `order-updates.<order_id>` right after its commit (outside the
//! JetStream streams: a notification, not an event). The announcement
//! carries what was committed: the new status (with what a reserved order's
//! payment waits for, and the URL where its customer acts) and the
//! `updated_at` the change set under the order's row lock, which orders an
//! order's changes; so a payment that starts waiting reaches watchers
//! though the order stays RESERVED.
//! A watcher subscribes before it reads the order, so no change can slip
//! between the read and the subscription, then applies each announced
//! change newer than what it has sent, without reading the database again;
//! an older or duplicate announcement changes nothing. Core NATS may drop a
//! notification (a reconnect), so watchers also re-read every few seconds,
//! and an announcement they cannot decode makes them re-read at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use shop_runtime::CancellationToken;
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc};
use tonic::Status;
use uuid::Uuid;

use crate::{
    domain,
    store::{self, OrderRecord},
};

/// How often a watcher re-reads even without an announcement.
const SAFETY_NET: Duration = Duration::from_secs(2);
/// Longest a single watch lasts; a client can watch again.
const MAX_WATCH: Duration = Duration::from_secs(3600);

/// `WATCH_MAX_CONCURRENT` and `WATCH_MAX_PER_USER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Watches one replica serves at once.
    pub per_replica: usize,
    /// Watches one user holds on one replica at once.
    pub per_user: usize,
}

/// How many watches each user holds on this replica.
struct Holders {
    max: usize,
    counts: Mutex<HashMap<String, usize>>,
}

impl Holders {
    /// A place for one more watch of `user`, unless they hold `max`.
    fn take(self: &Arc<Self>, user: &str) -> Option<Share> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let held = counts.entry(user.to_owned()).or_insert(0);
        if *held >= self.max {
            return None;
        }
        *held += 1;
        Some(Share {
            holders: Arc::clone(self),
            user: user.to_owned(),
        })
    }
}

/// One watch of a user; given back when dropped.
struct Share {
    holders: Arc<Holders>,
    user: String,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut counts = self.holders.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = counts.get_mut(&self.user) {
            *held -= 1;
            if *held == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

fn subject(order_id: Uuid) -> String {
    format!("order-updates.{order_id}")
}

/// Announces order changes to watchers on every replica, and admits at
/// most so many watches at once on this one (each re-reads the database
/// every `SAFETY_NET`), and so many of one user, so that one customer
/// cannot take them all.
#[derive(Clone)]
pub struct Announcer {
    nats: async_nats::Client,
    watches: Arc<Semaphore>,
    per_user: Arc<Holders>,
    /// The server is stopping: every watch ends, to be made again elsewhere.
    stopping: CancellationToken,
}

impl Announcer {
    pub fn new(nats: async_nats::Client, limits: WatchLimits, stopping: CancellationToken) -> Self {
        Self {
            nats,
            watches: Arc::new(Semaphore::new(limits.per_replica)),
            per_user: Arc::new(Holders {
                max: limits.per_user,
                counts: Mutex::new(HashMap::new()),
            }),
            stopping,
        }
    }

    /// Best effort: a lost announcement only delays watchers until their
    /// next safety-net read.
    pub async fn changed(&self, order_id: Uuid, change: Change) {
        if let Err(e) = self.nats.publish(subject(order_id), change.encode()).await {
            tracing::debug!(%order_id, error = %e, "order change not announced");
        }
    }

    /// Streams the order now and after every change until it is terminal
    /// (confirmed or cancelled; a confirmed order's refunds later are
    /// seen with GetOrder).
    /// `first` is the caller's read of the order (which checks that it is
    /// theirs to see); it runs once the subscription is in place, so it is
    /// the first state sent.
    pub async fn watch<F, R>(
        &self,
        pool: PgPool,
        user: &str,
        order_id: Uuid,
        first: R,
        to_proto: F,
    ) -> Result<mpsc::Receiver<Result<shop_proto::order::v1::Order, Status>>, Status>
    where
        F: Fn(OrderRecord) -> shop_proto::order::v1::Order + Send + 'static,
        R: std::future::Future<Output = Result<OrderRecord, Status>>,
    {
        let share = self.per_user.take(user).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "you are watching {} orders on this server already; end one, or poll GetOrder",
                self.per_user.max
            ))
        })?;
        let place = self.watches.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "too many orders are watched on this server right now; poll GetOrder, or watch again shortly",
            )
        })?;
        let mut updates = self.nats.subscribe(subject(order_id)).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot subscribe to order updates");
            Status::unavailable("order updates are temporarily unavailable; poll GetOrder")
        })?;
        let mut order = first.await?;
        let (tx, rx) = mpsc::channel(8);
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            // Given back when the watch ends, however it ends.
            let _place = (place, share);
            let deadline = tokio::time::Instant::now() + MAX_WATCH;
            let mut sent: Option<DateTime<Utc>> = None;
            loop {
                if sent.is_none_or(|at| order.updated_at > at) {
                    sent = Some(order.updated_at);
                    if tx.send(Ok(to_proto(order.clone()))).await.is_err() {
                        return; // the client went away
                    }
                }
                if order.status.is_terminal() {
                    return;
                }
                let reread = tokio::select! {
                    update = updates.next() => match update {
                        // The subscription is over (the connection is
                        // closing): the client watches again, elsewhere.
                        None => {
                            let gone = Status::unavailable("order updates were interrupted; watch the order again");
                            let _ = tx.send(Err(gone)).await;
                            return;
                        }
                        Some(message) => match Change::decode(&message.payload) {
                            Some(change) => {
                                change.apply_to(&mut order);
                                false
                            }
                            None => true,
                        },
                    },
                    () = tokio::time::sleep(SAFETY_NET) => true,
                    () = stopping.cancelled() => {
                        let going = Status::unavailable("this server is shutting down; watch the order again");
                        let _ = tx.send(Err(going)).await;
                        return;
                    }
                    () = tx.closed() => return,
                    () = tokio::time::sleep_until(deadline) => return,
                };
                if reread
                    && let Ok(mut conn) = pool.acquire().await
                    && let Ok(Some(read)) = store::load(&mut conn, order_id).await
                {
                    order = read;
                }
            }
        });
        Ok(rx)
    }
}

/// A committed change of an order's status, as announced to its watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub status: domain::Status,
    /// The order's `updated_at` as the change set it.
    pub at: DateTime<Utc>,
    /// Where the customer authenticates the payment: `Some` exactly when
    /// the status waits for them.
    pub next_action_url: Option<String>,
}

impl Change {
    /// `<status>[:<cancel reason>][+<payment wait>] <updated_at in µs since
    /// the epoch>[ <next action URL>]` (the URL has no spaces).
    fn encode(&self) -> bytes::Bytes {
        let (status, reason, wait) = self.status.to_columns();
        let reason = reason.map(|r| format!(":{r}")).unwrap_or_default();
        let wait = wait.map(|w| format!("+{w}")).unwrap_or_default();
        let url = self
            .next_action_url
            .as_ref()
            .map(|u| format!(" {u}"))
            .unwrap_or_default();
        format!("{status}{reason}{wait} {}{url}", self.at.timestamp_micros()).into()
    }

    fn decode(payload: &[u8]) -> Option<Self> {
        let mut parts = std::str::from_utf8(payload).ok()?.split(' ');
        let (status, at, url) = (parts.next()?, parts.next()?, parts.next());
        if parts.next().is_some() {
            return None;
        }
        let (status, wait) = match status.split_once('+') {
            Some((status, wait)) => (status, Some(wait)),
            None => (status, None),
        };
        let (status, reason) = match status.split_once(':') {
            Some((status, reason)) => (status, Some(reason)),
            None => (status, None),
        };
        let status = domain::Status::from_columns(status, reason, wait)?;
        let awaits_customer = status == domain::Status::Reserved(Some(domain::PaymentWait::CustomerAction));
        if awaits_customer != url.is_some() {
            return None;
        }
        Some(Self {
            status,
            at: DateTime::from_timestamp_micros(at.parse().ok()?)?,
            next_action_url: url.map(str::to_owned),
        })
    }

    /// Applies the change if it is newer than what `order` holds.
    fn apply_to(self, order: &mut OrderRecord) {
        if self.at > order.updated_at {
            order.status = self.status;
            order.updated_at = self.at;
            order.next_action_url = self.next_action_url;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CancelReason, PaymentWait, Status};

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros).expect("valid")
    }

    #[test]
    fn every_status_survives_the_announcement() {
        let statuses = [
            Status::Pending,
            Status::Confirmed,
            Status::PartiallyRefunded,
            Status::Refunded,
        ]
        .into_iter()
        .chain([None, Some(PaymentWait::Processing)].map(Status::Reserved))
        .chain(CancelReason::ALL.into_iter().map(Status::Cancelled));
        let changes = statuses.map(|status| (status, None)).chain([(
            Status::Reserved(Some(PaymentWait::CustomerAction)),
            Some("https://provider.example/3ds/pi_1?return_url=x%20y".to_owned()),
        )]);
        for (status, next_action_url) in changes {
            let change = Change {
                status,
                at: at(1_764_561_234_567_890),
                next_action_url,
            };
            assert_eq!(Change::decode(&change.encode()), Some(change));
        }
        for garbage in [
            "",
            "reserved",
            "shipped 1",
            "cancelled:bored 1",
            "confirmed x",
            "\u{fffd} 1",
            "reserved+napping 1",
            "pending+processing 1",
            "cancelled:timed_out+processing 1",
            // The URL comes with a wait for the customer, and only then.
            "reserved+customer_action 1",
            "reserved+processing 1 https://x.example/",
            "confirmed 1 https://x.example/",
            "reserved+customer_action 1 https://x.example/ more",
        ] {
            assert_eq!(Change::decode(garbage.as_bytes()), None, "{garbage:?}");
        }
    }

    #[test]
    fn a_watcher_applies_only_changes_newer_than_what_it_holds() {
        let mut order = OrderRecord {
            order_id: Uuid::now_v7(),
            user_id: "alice".into(),
            status: Status::Reserved(None),
            lines: vec![],
            total_minor: 1,
            currency: "EUR".into(),
            payment_method: "pm_card_ok".into(),
            request_fingerprint: String::new(),
            created_at: at(1),
            updated_at: at(20),
            next_action_url: None,
            refunds: vec![],
        };
        let change = |status, micros, url: Option<&str>| Change {
            status,
            at: at(micros),
            next_action_url: url.map(str::to_owned),
        };
        // Committed before the watcher's read: already in what it holds.
        change(Status::Pending, 10, None).apply_to(&mut order);
        change(Status::Reserved(None), 20, None).apply_to(&mut order);
        assert_eq!((order.status, order.updated_at), (Status::Reserved(None), at(20)));

        // The payment waits for the customer: still RESERVED, newer.
        let action = Status::Reserved(Some(PaymentWait::CustomerAction));
        change(action, 25, Some("https://x.example/3ds")).apply_to(&mut order);
        assert_eq!((order.status, order.updated_at), (action, at(25)));
        assert_eq!(order.next_action_url.as_deref(), Some("https://x.example/3ds"));

        change(Status::Confirmed, 30, None).apply_to(&mut order);
        assert_eq!((order.status, order.updated_at), (Status::Confirmed, at(30)));
        assert_eq!(order.next_action_url, None);
    }
}
