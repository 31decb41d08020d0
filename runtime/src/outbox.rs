//! Transactional outbox and its relay.
//!
//! A service writes its state change and the event row in one transaction
//! ([`Outbox::begin`], [`Outbox::enqueue`]) and commits it with
//! [`Outbox::commit`], which hands the committed events to the relay
//! in-process. The relay publishes them at once, each with `Nats-Msg-Id` =
//! event id, awaits every PubAck, and marks them published, a few
//! milliseconds later and many rows per statement. So an event costs its
//! row's insert and a share of one update, and leaves within milliseconds.
//!
//! Rows nobody handed over (left by a crash, or by a failed publish) are
//! found by the relay's lease pass ([`Relay::drain`]), at start, every
//! `poll_interval` and while publishing fails: it leases a batch (replicas
//! never publish the same row at once, and no lock is held while waiting
//! for NATS), publishes, awaits the PubAcks and only then marks the rows.
//! A crash anywhere leaves rows unpublished; the next pass (or another
//! replica's) sends them again and JetStream's duplicate window drops the
//! copies, as it drops the copy a lease pass sends of a row that another
//! replica published and has not marked yet.

use std::{
    ops::{Deref, DerefMut},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field::Empty};
use uuid::Uuid;

use crate::{
    event::{self, Event, OutgoingEvent},
    series,
    trace::{Carrier, continue_trace},
};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A row that failed this many publishes in a row is reported (and again
/// after as many more).
const STUCK_REPORT_EVERY: i32 = 20;

/// How long a relay owns the rows it is publishing. Longer than a pass
/// (one PubAck timeout); rows of a relay that died are sent by the next pass
/// after it runs out.
const LEASE: Duration = Duration::from_secs(30);

/// How often the backlog gauges are refreshed.
const BACKLOG_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// After a failed pass, the relay waits at least this long before the next.
const MIN_PAUSE_AFTER_FAILURE: Duration = Duration::from_millis(100);

/// How long published rows wait to be marked, so that one statement marks
/// the rows of many passes. A crash before the mark only means the next
/// lease pass sends them again, to be dropped as duplicates.
const MARK_DELAY: Duration = Duration::from_millis(100);

/// Marks the rows `$1` (event ids) published: by the relay after a hand-over
/// and after a lease pass alike.
const MARK_PUBLISHED: &str =
    "UPDATE outbox SET published_at = clock_timestamp(), leased_until = NULL WHERE event_id = ANY($1)";

/// Committed events waiting for the relay; beyond this, the lease pass
/// takes them from the table instead.
const HANDOVER_CAPACITY: usize = 4096;

/// Handle used by request handlers and event handlers to stage events.
#[derive(Clone)]
pub struct Outbox {
    source: &'static str,
    wake: Arc<Notify>,
    handover: Arc<Mutex<Handover>>,
}

/// Events committed in this process and not yet taken by its relay.
#[derive(Default)]
struct Handover {
    rows: Vec<PendingRow>,
    /// Some did not fit: the relay must look in the table.
    overflowed: bool,
}

/// A transaction that may stage events: a `PgConnection` for everything
/// else it does, committed only through [`Outbox::commit`].
pub struct Staging {
    tx: Transaction<'static, Postgres>,
    staged: Vec<PendingRow>,
}

impl Deref for Staging {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for Staging {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

impl Outbox {
    /// `source` is the publishing service, sent as `ce-source`.
    pub fn new(source: &'static str) -> Self {
        Self {
            source,
            wake: Arc::new(Notify::new()),
            handover: Arc::default(),
        }
    }

    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Begins a transaction that can stage events.
    pub async fn begin(&self, pool: &PgPool) -> Result<Staging, sqlx::Error> {
        Ok(Staging {
            tx: pool.begin().await?,
            staged: Vec::new(),
        })
    }

    /// Stages `event` in `staging`'s transaction.
    pub async fn enqueue<E: Event>(&self, staging: &mut Staging, event: &E) -> Result<Uuid, OutboxError> {
        let outgoing = OutgoingEvent::new(event)?;
        // The event continues the trace of whatever caused it: the relay's
        // publish span will be this span's child.
        let trace = Carrier::current();
        let created_at: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO outbox (event_id, event_type, subject, key, payload, occurred_at, traceparent, tracestate)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             RETURNING created_at",
        )
        .bind(outgoing.event_id)
        .bind(outgoing.event_type)
        .bind(&outgoing.subject)
        .bind(&outgoing.key)
        .bind(&outgoing.payload)
        .bind(outgoing.occurred_at)
        .bind(&trace.traceparent)
        .bind(&trace.tracestate)
        .fetch_one(&mut *staging.tx)
        .await?;
        staging.staged.push(PendingRow {
            event_id: outgoing.event_id,
            event_type: outgoing.event_type.to_owned(),
            subject: outgoing.subject,
            key: outgoing.key,
            payload: outgoing.payload,
            traceparent: trace.traceparent,
            tracestate: trace.tracestate,
            occurred_at: outgoing.occurred_at,
            created_at,
        });
        Ok(outgoing.event_id)
    }

    /// Commits `staging` and hands its events to the relay: the only way
    /// staged events are committed, so none waits for a poll.
    pub async fn commit(&self, staging: Staging) -> Result<(), sqlx::Error> {
        let Staging { tx, staged } = staging;
        tx.commit().await?;
        if staged.is_empty() {
            return Ok(());
        }
        {
            let mut handover = self.handover.lock().unwrap_or_else(PoisonError::into_inner);
            if handover.rows.len() + staged.len() > HANDOVER_CAPACITY {
                handover.overflowed = true;
            } else {
                handover.rows.extend(staged);
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// A relay publishing this outbox's rows.
    pub fn relay(&self, pool: PgPool, js: jetstream::Context, poll_interval: Duration) -> Relay {
        Relay {
            pool,
            js,
            source: self.source,
            wake: self.wake.clone(),
            handover: self.handover.clone(),
            poll_interval,
            batch_size: 256,
        }
    }
}

/// Publishes committed outbox rows to JetStream.
pub struct Relay {
    pool: PgPool,
    js: jetstream::Context,
    source: &'static str,
    wake: Arc<Notify>,
    handover: Arc<Mutex<Handover>>,
    poll_interval: Duration,
    batch_size: i64,
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    event_id: Uuid,
    event_type: String,
    subject: String,
    key: String,
    payload: Vec<u8>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    occurred_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

impl Relay {
    /// Runs until `shutdown`: publishes what this process commits as it is
    /// handed over, and runs a lease pass at start, every `poll_interval`,
    /// when the handover overflowed, and with growing pauses while
    /// publishing fails (handed-over events then wait for those passes).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        let mut unmarked: Vec<Uuid> = Vec::new();
        // When `unmarked` is marked next.
        let mut mark_at = Instant::now();
        let mut next_pass = Instant::now();
        let mut last_pass = Instant::now();
        let mut next_report = Instant::now();
        let mut woken = false;
        loop {
            let (handed, overflowed) = self.take_handover();
            if failures == 0 && !handed.is_empty() {
                let published = self.publish(handed).await;
                if unmarked.is_empty() {
                    mark_at = Instant::now() + MARK_DELAY;
                }
                unmarked.extend(published.ids);
                if let Err(e) = published.outcome {
                    failures = 1;
                    tracing::warn!(error = %e, "publishing just committed events failed; will retry from the table");
                    next_pass = last_pass + MIN_PAUSE_AFTER_FAILURE;
                }
            }
            let now = Instant::now();
            let retry_now = failures > 0 && woken && now >= last_pass + MIN_PAUSE_AFTER_FAILURE;
            if overflowed || retry_now || now >= next_pass {
                // Marked first, so the pass does not send them again.
                self.mark(&mut unmarked).await;
                last_pass = Instant::now();
                match self.drain().await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %e, failures, "outbox relay pass failed; will retry");
                    }
                }
                // Back off while NATS or Postgres is down, but never longer
                // than the safety-net poll.
                let pause = match failures {
                    0 => self.poll_interval,
                    n => Duration::from_millis(100u64.saturating_mul(1 << n.min(6))).min(self.poll_interval),
                };
                next_pass = last_pass + pause.max(MIN_PAUSE_AFTER_FAILURE);
            }
            if Instant::now() >= next_report {
                next_report = Instant::now() + BACKLOG_REPORT_INTERVAL;
                if let Err(e) = self.report_backlog().await {
                    tracing::debug!(error = %e, "outbox backlog not measured");
                }
            }
            // Published rows are marked together, MARK_DELAY after the
            // first of them.
            let until = match unmarked.is_empty() {
                true => next_pass,
                false => next_pass.min(mark_at),
            };
            woken = tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => true,
                () = tokio::time::sleep_until(until) => false,
            };
            let due = Instant::now() >= mark_at || unmarked.len() >= self.batch_size as usize;
            if !unmarked.is_empty() && due && !self.mark(&mut unmarked).await {
                // The database is away: not again at once.
                mark_at = Instant::now() + MIN_PAUSE_AFTER_FAILURE;
            }
        }
        // The service is going: what its last calls and events committed
        // leaves now, not at another replica's (or the next start's) pass.
        let (handed, _) = self.take_handover();
        if !handed.is_empty() {
            unmarked.extend(self.publish(handed).await.ids);
        }
        self.mark(&mut unmarked).await;
    }

    fn take_handover(&self) -> (Vec<PendingRow>, bool) {
        let mut handover = self.handover.lock().unwrap_or_else(PoisonError::into_inner);
        let overflowed = std::mem::take(&mut handover.overflowed);
        (std::mem::take(&mut handover.rows), overflowed)
    }

    /// Marks `ids` published and forgets them; on failure (false) they stay
    /// for the next try, up to the handover's capacity (beyond that a lease
    /// pass sends them again).
    async fn mark(&self, ids: &mut Vec<Uuid>) -> bool {
        if ids.is_empty() {
            return true;
        }
        let marked = sqlx::query(MARK_PUBLISHED).bind(&*ids).execute(&self.pool).await;
        match marked {
            Ok(_) => {
                ids.clear();
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, rows = ids.len(), "published rows not marked yet");
                if ids.len() > HANDOVER_CAPACITY {
                    ids.clear();
                }
                false
            }
        }
    }

    /// Lease passes until no unpublished row is left (or claimable).
    pub async fn drain(&self) -> Result<(), RelayError> {
        while self.lease_pass().await? == self.batch_size as usize {}
        Ok(())
    }

    /// Leases, publishes and marks one batch; returns how many rows it leased.
    async fn lease_pass(&self) -> Result<usize, RelayError> {
        // The lease is taken and committed in one statement, so no lock is
        // held while the acks are awaited; SKIP LOCKED only keeps two
        // relays from leasing the same row at the same instant.
        let rows: Vec<PendingRow> = sqlx::query_as(
            "UPDATE outbox SET leased_until = clock_timestamp() + make_interval(secs => $2)
              WHERE event_id IN (
                    SELECT event_id FROM outbox
                     WHERE published_at IS NULL
                       AND (leased_until IS NULL OR leased_until < clock_timestamp())
                     ORDER BY created_at, event_id
                     LIMIT $1
                       FOR UPDATE SKIP LOCKED)
             RETURNING event_id, event_type, subject, key, payload, traceparent, tracestate, occurred_at, created_at",
        )
        .bind(self.batch_size)
        .bind(LEASE.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let leased = rows.len();
        if leased == 0 {
            return Ok(0);
        }
        let published = self.publish(rows).await;
        sqlx::query(MARK_PUBLISHED)
            .bind(&published.ids)
            .execute(&self.pool)
            .await?;
        published.outcome.map(|()| leased)
    }

    /// Publishes `rows` in their order of creation, then awaits every
    /// PubAck; a row that fails is recorded (its lease given back).
    async fn publish(&self, mut rows: Vec<PendingRow>) -> Published {
        rows.sort_by_key(|row| (row.created_at, row.event_id));
        // Send the whole batch, then await the acks: one round trip of
        // latency for the batch instead of one per event.
        let started = std::time::Instant::now();
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            // From send to PubAck, in the trace of the span that staged it.
            let span = tracing::info_span!(
                "publish",
                otel.name = %format_args!("{} publish", row.subject.rsplit_once('.').map_or("", |(kind, _)| kind)),
                otel.kind = "producer",
                messaging.system = "nats",
                messaging.destination.name = %row.subject,
                key = %row.key,
                event_id = %row.event_id,
                trace_id = Empty,
            );
            let staged_by = Carrier {
                traceparent: row.traceparent.clone(),
                tracestate: row.tracestate.clone(),
            };
            continue_trace(&span, &staged_by);
            let headers = event::headers(
                row.event_id,
                &row.event_type,
                self.source,
                &row.key,
                row.occurred_at,
                &Carrier::of(&span),
            );
            let message = PublishMessage::build()
                .payload(Bytes::from(row.payload.clone()))
                .headers(headers);
            let sent = self.js.send_publish(row.subject.clone(), message).await;
            pending.push((row.event_id, sent, span));
        }
        // All at once: while NATS is away every ack waits out its timeout,
        // and one by one that would keep these rows leased for minutes.
        let acks = futures::future::join_all(pending.into_iter().map(|(event_id, sent, span)| {
            async move {
                let acked = match sent {
                    Ok(ack) => ack.await.map(|ack| ack.duplicate).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (event_id, acked)
            }
            .instrument(span)
        }))
        .await;
        metrics::histogram!(series::OUTBOX_PUBLISH_SECONDS, "service" => self.source)
            .record(started.elapsed().as_secs_f64());
        let mut published = Published {
            ids: Vec::with_capacity(rows.len()),
            outcome: Ok(()),
        };
        // A copy the stream already had (a row sent again before its mark
        // landed, or after a crash) is marked but not counted again.
        let mut stored = 0;
        for (event_id, acked) in acks {
            match acked {
                Ok(duplicate) => {
                    stored += u64::from(!duplicate);
                    published.ids.push(event_id);
                }
                Err(e) => {
                    if let Err(db) = self.record_failure(event_id, &e).await {
                        tracing::debug!(error = %db, %event_id, "failed publish not recorded");
                    }
                    if published.outcome.is_ok() {
                        published.outcome = Err(RelayError::Publish(e));
                    }
                }
            }
        }
        metrics::counter!(series::OUTBOX_PUBLISHED, "service" => self.source).increment(stored);
        published
    }

    /// Counts a failed publish of the row and gives its lease back, so the
    /// next pass retries it at once.
    async fn record_failure(&self, event_id: Uuid, error: &str) -> Result<(), sqlx::Error> {
        let attempts: i32 = sqlx::query_scalar(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2, leased_until = NULL
              WHERE event_id = $1
             RETURNING attempts",
        )
        .bind(event_id)
        .bind(error)
        .fetch_one(&self.pool)
        .await?;
        metrics::counter!(series::OUTBOX_PUBLISH_FAILURES, "service" => self.source).increment(1);
        // An outage fails every row for a while; a row failing on and on (no
        // stream for its subject, too large) must not do so silently.
        if attempts % STUCK_REPORT_EVERY == 0 {
            tracing::error!(%event_id, attempts, error, "outbox row still not published");
        }
        Ok(())
    }

    /// Sets the backlog gauges: how many rows wait and how old the oldest
    /// is. An outbox that does not drain shows here before anyone waits.
    async fn report_backlog(&self) -> Result<(), sqlx::Error> {
        let (waiting, oldest): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), EXTRACT(EPOCH FROM clock_timestamp() - min(created_at))::float8
               FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        metrics::gauge!(series::OUTBOX_PENDING_ROWS, "service" => self.source).set(waiting as f64);
        metrics::gauge!(series::OUTBOX_OLDEST_AGE_SECONDS, "service" => self.source).set(oldest.unwrap_or(0.0));
        Ok(())
    }
}

/// What a publish achieved: the rows the broker stored, and the first
/// failure, if any.
struct Published {
    ids: Vec<Uuid>,
    outcome: Result<(), RelayError>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("publish to JetStream failed: {0}")]
    Publish(String),
}
