//! Durable pull consumers with explicit acks, unbounded retries of transient
//! failures and a dead-letter path for poison.
//!
//! Each delivered message is turned into an [`IncomingEvent`] and handed to
//! an [`EventHandler`]. There are three outcomes, and a message leaves the
//! consumer only through the first two:
//!
//! - **Handled**: acked.
//! - **Poison** ([`HandleError::Reject`], malformed messages): parked on the
//!   `DLQ` stream as `dlq.<consumer>.<original subject>`, with the original
//!   stream, sequence, delivery count and error in headers, then terminated,
//!   so the consumer moves on. If parking fails, the message is kept and
//!   parked on a later delivery.
//! - **Transient** ([`HandleError::Retry`]: a dependency is down, an event
//!   arrived before the one it follows): redelivered with capped exponential
//!   backoff and jitter ([`Backoff`](crate::topology::Backoff)), up to the
//!   consumer's `max_deliver`, set high (hours of retries at the cap) as a
//!   backstop: a bug misread as transient must not retry for ever unseen.
//!   The last allowed delivery that fails is parked, as poison is.
//!
//! A message the server stops delivering without having heard an outcome
//! (the process crashed or hung on it every time) is announced by JetStream's
//! `MAX_DELIVERIES` advisory; the consumer follows it and parks that message
//! too, so nothing leaves a consumer unparked, and counts it
//! ([`series::CONSUMER_GIVEN_UP`]), which pages.
//!
//! The consumer pulls no more messages than it handles at once, so none
//! waits in a buffer while its `ack_wait` runs out.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{PullConsumer, pull},
    message::PublishMessage,
};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field::Empty};

use crate::{event::IncomingEvent, series, topology::ConsumerDefinition, trace::continue_trace};

const PULL_HEARTBEAT: Duration = Duration::from_secs(2);
const PULL_EXPIRES: Duration = Duration::from_secs(10);

pub const HEADER_DLQ_STREAM: &str = "Shop-Dlq-Stream";
pub const HEADER_DLQ_SEQUENCE: &str = "Shop-Dlq-Sequence";
pub const HEADER_DLQ_SUBJECT: &str = "Shop-Dlq-Subject";
pub const HEADER_DLQ_CONSUMER: &str = "Shop-Dlq-Consumer";
pub const HEADER_DLQ_DELIVERED: &str = "Shop-Dlq-Delivered";
pub const HEADER_DLQ_ERROR: &str = "Shop-Dlq-Error";

/// Why an event was not processed.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// May work later (a dependency is down, an event arrived before the
    /// one it follows): redeliver after a delay.
    #[error("{0}")]
    Retry(String),
    /// Will never work (undecodable, unknown type, impossible content):
    /// park it on the DLQ now.
    #[error("{0}")]
    Reject(String),
}

impl HandleError {
    pub fn unknown_type(event: &IncomingEvent) -> Self {
        Self::Reject(format!(
            "unknown event type {:?} on {}",
            event.event_type, event.subject
        ))
    }
}

impl From<crate::event::MalformedEvent> for HandleError {
    fn from(e: crate::event::MalformedEvent) -> Self {
        Self::Reject(e.to_string())
    }
}

impl From<sqlx::Error> for HandleError {
    fn from(e: sqlx::Error) -> Self {
        Self::Retry(format!("database: {e}"))
    }
}

impl From<crate::outbox::OutboxError> for HandleError {
    fn from(e: crate::outbox::OutboxError) -> Self {
        match e {
            crate::outbox::OutboxError::Encode(e) => Self::Reject(format!("cannot encode follow-up event: {e}")),
            crate::outbox::OutboxError::Database(e) => e.into(),
        }
    }
}

/// What a service does with the events of one consumer.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, event: IncomingEvent) -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// Runs one durable consumer until `shutdown`, handling up to `concurrency`
/// messages at once. Ordering across orders is not needed (each handler
/// serialises per order with row locks), so concurrency is safe.
pub async fn run<H: EventHandler>(
    js: jetstream::Context,
    definition: ConsumerDefinition,
    handler: Arc<H>,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let definition = Arc::new(definition);
    let waiting = Arc::new(Waiting::new(definition.name(), definition.config.ack_wait));
    tokio::join!(
        consume(
            js.clone(),
            definition.clone(),
            handler,
            waiting.clone(),
            concurrency,
            shutdown.clone()
        ),
        report_lag(js.clone(), definition.clone(), waiting, shutdown.clone()),
        park_given_up(js, definition, shutdown),
    );
}

/// JetStream's advisory that a consumer gave up on a message after
/// `max_deliver` deliveries.
#[derive(serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: i64,
}

/// Parks every message the server stops delivering to this consumer, from
/// its `MAX_DELIVERIES` advisories, until `shutdown`. Every replica does;
/// the DLQ's message id keeps one copy. An advisory missed while no replica
/// listened still shows in the consumer's info (`num_redelivered`) and the
/// stream keeps the message.
async fn park_given_up(js: jetstream::Context, definition: Arc<ConsumerDefinition>, shutdown: CancellationToken) {
    let consumer = definition.name().to_owned();
    let gave_up = metrics::counter!(series::CONSUMER_GIVEN_UP, "consumer" => consumer.clone());
    // At 0 from the start, so an alert on its increase has a series to read.
    gave_up.increment(0);
    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{consumer}",
        definition.stream
    );
    while !shutdown.is_cancelled() {
        let mut advisories = match js.client().subscribe(subject.clone()).await {
            Ok(advisories) => advisories,
            Err(e) => {
                tracing::warn!(consumer, error = %e, "cannot follow max-deliveries advisories; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let advisory = tokio::select! {
                () = shutdown.cancelled() => return,
                advisory = advisories.next() => advisory,
            };
            let Some(advisory) = advisory else { break };
            let Ok(given_up) = serde_json::from_slice::<MaxDeliveries>(&advisory.payload) else {
                tracing::warn!(consumer, "unreadable max-deliveries advisory");
                continue;
            };
            gave_up.increment(1);
            let reason = format!(
                "delivered {} times without an outcome (the handler crashed or hung each time)",
                given_up.deliveries
            );
            let parked = async {
                let stored = js
                    .get_stream(definition.stream)
                    .await?
                    .get_raw_message(given_up.stream_seq)
                    .await?;
                let message = Parkable {
                    subject: stored.subject.as_str(),
                    headers: Some(&stored.headers),
                    payload: &stored.payload,
                };
                park(
                    &js,
                    &consumer,
                    definition.stream,
                    given_up.stream_seq,
                    given_up.deliveries,
                    message,
                    &reason,
                )
                .await
            };
            match parked.await {
                Ok(()) => tracing::error!(consumer, sequence = given_up.stream_seq, %reason, "event parked on DLQ"),
                Err(e) => tracing::error!(
                    consumer,
                    sequence = given_up.stream_seq,
                    error = %e,
                    "the server gave up on an event and it could not be parked; it stays in its stream"
                ),
            }
        }
    }
}

/// How often a consumer's lag is read from JetStream.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Sets [`series::CONSUMER_PENDING`] and [`series::CONSUMER_ACK_PENDING`]
/// from the consumer's info until `shutdown`; a read that fails (the broker
/// away) leaves the last values. Also lets go of retries that came due
/// elsewhere ([`Waiting`]).
async fn report_lag(
    js: jetstream::Context,
    definition: Arc<ConsumerDefinition>,
    waiting: Arc<Waiting>,
    shutdown: CancellationToken,
) {
    let name = definition.name().to_owned();
    loop {
        waiting.report();
        if let Ok(stream) = js.get_stream(definition.stream).await
            && let Ok(mut consumer) = stream.get_consumer::<pull::Config>(&name).await
            && let Ok(info) = consumer.info().await
        {
            metrics::gauge!(series::CONSUMER_PENDING, "consumer" => name.clone()).set(info.num_pending as f64);
            metrics::gauge!(series::CONSUMER_ACK_PENDING, "consumer" => name.clone()).set(info.num_ack_pending as f64);
            metrics::gauge!(series::CONSUMER_MAX_ACK_PENDING, "consumer" => name.clone())
                .set(info.config.max_ack_pending as f64);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(LAG_EVERY) => {}
        }
    }
}

async fn consume<H: EventHandler>(
    js: jetstream::Context,
    definition: Arc<ConsumerDefinition>,
    handler: Arc<H>,
    waiting: Arc<Waiting>,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let concurrency = concurrency.max(1);
    while !shutdown.is_cancelled() {
        let messages = match open(&js, &definition, concurrency).await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(consumer = definition.name(), error = %e, "cannot open consumer; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // Any error ends this pull stream and it is reopened: a deleted and
        // re-created consumer (an operator replaying), a restarted broker or
        // missed heartbeats all recover the same way.
        messages
            .take_until(shutdown.cancelled())
            .take_while(|delivery| {
                if let Err(e) = delivery {
                    tracing::info!(consumer = definition.name(), error = %e, "pull stream interrupted");
                }
                std::future::ready(delivery.is_ok())
            })
            .for_each_concurrent(concurrency, |delivery| {
                let js = js.clone();
                let definition = definition.clone();
                let handler = handler.clone();
                let waiting = waiting.clone();
                async move {
                    if let Ok(message) = delivery {
                        process(&js, &definition, handler.as_ref(), &waiting, message).await;
                    }
                }
            })
            .await;
        if !shutdown.is_cancelled() {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// The messages of one consumer that failed transiently here and wait for
/// their redelivery, by stream sequence: how many there are is the gauge
/// [`series::CONSUMER_WAITING_RETRY`], which stays up while a dependency is
/// down. The redelivery may go to another replica, which this one never
/// hears of; so each entry lasts until its retry is due plus the consumer's
/// `ack_wait` (time for the redelivery to arrive), unless it comes back here
/// first.
struct Waiting {
    consumer: String,
    /// Added to a retry's delay: how long its redelivery may take to come.
    grace: Duration,
    /// Sequence → when to stop counting it.
    sequences: Mutex<HashMap<u64, Instant>>,
}

impl Waiting {
    fn new(consumer: &str, ack_wait: Duration) -> Self {
        Self {
            consumer: consumer.to_owned(),
            grace: ack_wait,
            sequences: Mutex::new(HashMap::new()),
        }
    }

    /// `sequence` failed transiently and comes again after `delay`.
    fn retry(&self, sequence: u64, delay: Duration) {
        let until = Instant::now() + delay + self.grace;
        self.update(|sequences| {
            sequences.insert(sequence, until);
        });
    }

    /// `sequence` is handled, parked or given up on here.
    fn done(&self, sequence: u64) {
        self.update(|sequences| {
            sequences.remove(&sequence);
        });
    }

    /// Drops what came due and sets the gauge; how many wait.
    fn report(&self) -> usize {
        self.update(|_| {})
    }

    fn update(&self, change: impl FnOnce(&mut HashMap<u64, Instant>)) -> usize {
        let mut sequences = self.sequences.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut sequences);
        let now = Instant::now();
        sequences.retain(|_, until| *until > now);
        let waiting = sequences.len();
        metrics::gauge!(series::CONSUMER_WAITING_RETRY, "consumer" => self.consumer.clone()).set(waiting as f64);
        waiting
    }
}

async fn open(
    js: &jetstream::Context,
    definition: &ConsumerDefinition,
    concurrency: usize,
) -> Result<pull::Stream, async_nats::Error> {
    let consumer: PullConsumer = js
        .get_stream(definition.stream)
        .await?
        .get_consumer(definition.name())
        .await?;
    // A short idle heartbeat: a consumer that vanished is noticed within
    // seconds (two missed heartbeats), not the default half minute.
    // No bigger batches than the handlers take at once: a buffered message
    // gets no progress acks, and would be redelivered while still waiting.
    let messages = consumer
        .stream()
        .max_messages_per_batch(concurrency)
        .heartbeat(PULL_HEARTBEAT)
        .expires(PULL_EXPIRES)
        .messages()
        .await?;
    Ok(messages)
}

async fn process<H: EventHandler>(
    js: &jetstream::Context,
    definition: &ConsumerDefinition,
    handler: &H,
    waiting: &Waiting,
    message: jetstream::Message,
) {
    let consumer = definition.name();
    let (stream, sequence, delivered) = match message.info() {
        Ok(info) => (info.stream.to_owned(), info.stream_sequence, info.delivered),
        Err(e) => {
            tracing::warn!(consumer, error = %e, "message without JetStream metadata; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let subject = message.subject.to_string();
    let outcome = match IncomingEvent::from_message(&subject, message.headers.as_ref(), message.payload.clone()) {
        Err(malformed) => Err(HandleError::Reject(malformed.to_string())),
        Ok(event) => {
            // Every subject ends in its order's id (`orders.placed.<id>`):
            // each line of the handling names the order.
            let order_id = subject.rsplit('.').next().unwrap_or_default();
            let span = tracing::info_span!(
                "event",
                otel.name = %format_args!("{consumer} process"),
                otel.kind = "consumer",
                messaging.system = "nats",
                consumer,
                order_id,
                subject = %subject,
                event_id = %event.event_id,
                delivered,
                trace_id = Empty,
            );
            continue_trace(&span, &event.trace);
            let work = with_progress(
                &message,
                definition.config.ack_wait,
                definition.handler_timeout,
                handler.handle(event),
            );
            let started = std::time::Instant::now();
            let outcome = work.instrument(span).await;
            metrics::histogram!(series::CONSUMER_HANDLING_SECONDS, "consumer" => consumer.to_owned())
                .record(started.elapsed().as_secs_f64());
            outcome
        }
    };
    let retry_delay = || definition.retry.delay(delivered, rand::random());
    // The last delivery allowed: parked rather than dropped by the server.
    let max_deliver = definition.config.max_deliver;
    let outcome = match outcome {
        Err(HandleError::Retry(reason)) if max_deliver > 0 && delivered >= max_deliver => Err(HandleError::Reject(
            format!("gave up after {delivered} deliveries (max_deliver): {reason}"),
        )),
        other => other,
    };
    match &outcome {
        Err(HandleError::Retry(_)) => {}
        _ => waiting.done(sequence),
    }
    match outcome {
        Ok(()) => {
            metrics::counter!(series::CONSUMER_EVENTS, "consumer" => consumer.to_owned(), "result" => "handled")
                .increment(1);
            if let Err(e) = message.ack().await {
                // The handler was idempotent, so a redelivery is harmless.
                tracing::warn!(consumer, subject, error = %e, "ack failed; the event will be redelivered");
            }
        }
        Err(HandleError::Retry(reason)) => {
            let delay = retry_delay();
            waiting.retry(sequence, delay);
            tracing::info!(consumer, subject, delivered, ?delay, %reason, "event will be retried");
            metrics::counter!(series::CONSUMER_EVENTS, "consumer" => consumer.to_owned(), "result" => "retried")
                .increment(1);
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
        }
        Err(HandleError::Reject(reason)) => {
            let parkable = Parkable {
                subject: message.subject.as_str(),
                headers: message.headers.as_ref(),
                payload: &message.payload,
            };
            match park(js, consumer, &stream, sequence, delivered, parkable, &reason).await {
                Ok(()) => {
                    tracing::error!(consumer, subject, sequence, %reason, "event parked on DLQ");
                    metrics::counter!(series::CONSUMER_EVENTS, "consumer" => consumer.to_owned(), "result" => "parked")
                        .increment(1);
                    let _ = message.ack_with(AckKind::Term).await;
                }
                Err(e) => {
                    // Never drop a message that is not parked: it comes back.
                    let delay = retry_delay();
                    tracing::error!(consumer, subject, error = %e, ?delay, "cannot park event on DLQ; will retry");
                    let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                }
            }
        }
    }
}

/// Runs `work`, telling JetStream the message is still in progress so a slow
/// handler (a payment provider call) is not redelivered under its feet, but
/// for no longer than `timeout`: then the work is dropped and the message
/// retried, so a hung call can neither pin this slot nor hold up shutdown.
async fn with_progress<F: Future<Output = Result<(), HandleError>>>(
    message: &jetstream::Message,
    ack_wait: Duration,
    timeout: Duration,
    work: F,
) -> Result<(), HandleError> {
    let period = (ack_wait / 3).max(Duration::from_millis(500));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(work, deadline);
    loop {
        tokio::select! {
            result = &mut work => return result,
            () = &mut deadline => {
                return Err(HandleError::Retry(format!("handling took longer than {timeout:?}; given up")));
            }
            _ = ticker.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

/// What parking needs of a message: a delivery's, or one read back from
/// its stream.
struct Parkable<'a> {
    subject: &'a str,
    headers: Option<&'a async_nats::HeaderMap>,
    payload: &'a bytes::Bytes,
}

async fn park(
    js: &jetstream::Context,
    consumer: &str,
    stream: &str,
    sequence: u64,
    delivered: i64,
    message: Parkable<'_>,
    reason: &str,
) -> Result<(), async_nats::Error> {
    let mut headers = message.headers.cloned().unwrap_or_default();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("dlq:{stream}:{sequence}:{consumer}").as_str(),
    );
    headers.insert(HEADER_DLQ_STREAM, stream);
    headers.insert(HEADER_DLQ_SEQUENCE, sequence.to_string().as_str());
    headers.insert(HEADER_DLQ_SUBJECT, message.subject);
    headers.insert(HEADER_DLQ_CONSUMER, consumer);
    headers.insert(HEADER_DLQ_DELIVERED, delivered.to_string().as_str());
    // Header values cannot hold newlines; keep the error on one line.
    headers.insert(HEADER_DLQ_ERROR, reason.replace(['\r', '\n'], " ").as_str());
    let subject = format!("dlq.{consumer}.{}", message.subject);
    let publish = PublishMessage::build()
        .payload(message.payload.clone())
        .headers(headers);
    js.send_publish(subject, publish).await?.await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_retry_that_comes_due_elsewhere_stops_counting_here() {
        let ack_wait = Duration::from_secs(30);
        let waiting = Waiting::new("order-inventory", ack_wait);
        waiting.retry(7, Duration::from_secs(2));
        waiting.retry(8, Duration::from_secs(60));
        assert_eq!(waiting.report(), 2);
        // Redelivered here and handled: gone at once.
        waiting.done(8);
        assert_eq!(waiting.report(), 1);
        // 7's redelivery went to another replica: this one stops counting it
        // once it could have come back here.
        tokio::time::advance(Duration::from_secs(2) + ack_wait).await;
        assert_eq!(waiting.report(), 0);
        // Retried here again and again, it stays counted meanwhile.
        waiting.retry(9, Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(20)).await;
        waiting.retry(9, Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(waiting.report(), 1);
    }
}
