//! Transactional outbox and its relay.
//!
//! A service writes its state change and the event row in one transaction
//! ([`Outbox::enqueue`]), commits, then wakes the relay in-process
//! ([`Outbox::commit`]) so the event leaves within milliseconds. The relay
//! leases a batch of rows (replicas never publish the same row at once, and
//! no lock is held while waiting for NATS), publishes each with
//! `Nats-Msg-Id` = event id, awaits every PubAck, and only then marks the
//! rows published. A crash anywhere in between leaves rows unpublished; once
//! the lease runs out the next pass (or another replica's safety-net poll)
//! sends them again and JetStream's duplicate window drops the copies.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::Notify;
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

/// Handle used by request handlers and event handlers to stage events.
#[derive(Clone)]
pub struct Outbox {
    source: &'static str,
    wake: Arc<Notify>,
}

impl Outbox {
    /// `source` is the publishing service, sent as `ce-source`.
    pub fn new(source: &'static str) -> Self {
        Self {
            source,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Stages `event` in the caller's transaction.
    pub async fn enqueue<E: Event>(&self, conn: &mut PgConnection, event: &E) -> Result<Uuid, OutboxError> {
        let outgoing = OutgoingEvent::new(event)?;
        let trace = Carrier::current();
        sqlx::query(
            "INSERT INTO outbox (event_id, event_type, subject, key, payload, occurred_at, traceparent, tracestate)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(outgoing.event_id)
        .bind(outgoing.event_type)
        .bind(&outgoing.subject)
        .bind(&outgoing.key)
        .bind(&outgoing.payload)
        .bind(outgoing.occurred_at)
        // The event continues the trace of whatever caused it: the relay's
        // publish span will be this span's child.
        .bind(trace.traceparent)
        .bind(trace.tracestate)
        .execute(conn)
        .await?;
        Ok(outgoing.event_id)
    }

    /// Commits `tx` and wakes the relay: the only way staged events should
    /// be committed, so no code path forgets the wake-up.
    pub async fn commit(&self, tx: Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        tx.commit().await?;
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
    /// Runs until `shutdown`: drains the outbox whenever woken, and at least
    /// every `poll_interval` for rows another (crashed) instance left behind.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        let mut next_report = tokio::time::Instant::now();
        loop {
            match self.drain().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "outbox relay pass failed; will retry");
                }
            }
            if tokio::time::Instant::now() >= next_report {
                next_report = tokio::time::Instant::now() + BACKLOG_REPORT_INTERVAL;
                if let Err(e) = self.report_backlog().await {
                    tracing::debug!(error = %e, "outbox backlog not measured");
                }
            }
            // Back off while NATS or Postgres is down, but never longer than
            // the safety-net poll; a commit still wakes the relay then, only
            // not sooner than the shortest pause.
            let wait = if failures == 0 {
                self.poll_interval
            } else {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(MIN_PAUSE_AFTER_FAILURE) => {}
                }
                Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)))
                    .min(self.poll_interval)
                    .saturating_sub(MIN_PAUSE_AFTER_FAILURE)
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Publishes batches until no unpublished row is left (or claimable).
    pub async fn drain(&self) -> Result<(), RelayError> {
        while self.publish_batch().await? == self.batch_size as usize {}
        Ok(())
    }

    /// Leases, publishes and marks one batch; returns how many rows it leased.
    async fn publish_batch(&self) -> Result<usize, RelayError> {
        // The lease is taken and committed in one statement, so no lock is
        // held while the acks are awaited; SKIP LOCKED only keeps two
        // relays from leasing the same row at the same instant.
        let mut rows: Vec<PendingRow> = sqlx::query_as(
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
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_by_key(|row| (row.created_at, row.event_id));
        let leased = rows.len();

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
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (event_id, acked)
            }
            .instrument(span)
        }))
        .await;
        metrics::histogram!(series::OUTBOX_PUBLISH_SECONDS, "service" => self.source)
            .record(started.elapsed().as_secs_f64());
        let mut published = Vec::with_capacity(rows.len());
        let mut first_error = None;
        for (event_id, acked) in acks {
            match acked {
                Ok(()) => published.push(event_id),
                Err(e) => {
                    // The lease is given back, so the next pass retries at once.
                    let attempts: i32 = sqlx::query_scalar(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $2, leased_until = NULL
                          WHERE event_id = $1
                         RETURNING attempts",
                    )
                    .bind(event_id)
                    .bind(&e)
                    .fetch_one(&self.pool)
                    .await?;
                    metrics::counter!(series::OUTBOX_PUBLISH_FAILURES, "service" => self.source).increment(1);
                    // An outage fails every row for a while; a row failing
                    // on and on (no stream for its subject, too large) must
                    // not do so silently.
                    if attempts % STUCK_REPORT_EVERY == 0 {
                        tracing::error!(%event_id, attempts, error = %e, "outbox row still not published");
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        sqlx::query("UPDATE outbox SET published_at = clock_timestamp(), leased_until = NULL WHERE event_id = ANY($1)")
            .bind(&published)
            .execute(&self.pool)
            .await?;
        metrics::counter!(series::OUTBOX_PUBLISHED, "service" => self.source).increment(published.len() as u64);
        match first_error {
            Some(e) => Err(RelayError::Publish(e)),
            None => Ok(leased),
        }
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

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("publish to JetStream failed: {0}")]
    Publish(String),
}
