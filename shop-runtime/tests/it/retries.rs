//! How a consumer treats failures, against a real nats-server: transient
//! ones are retried for as long as they last, poison is parked, and no
//! message is dropped on the way (not by a delivery limit, not by a DLQ that
//! is down, not by waiting in a buffer).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::support;
use shop_runtime::{
    CancellationToken,
    consumer::{self, EventHandler, HandleError},
    event::IncomingEvent,
    topology::{self, ConsumerDefinition},
};

use support::{broker, eventually, publish_placed as publish};

/// `inventory-orders` as declared, with retries fast enough for a test.
async fn consumer(js: &async_nats::jetstream::Context) -> anyhow::Result<ConsumerDefinition> {
    let mut definition = topology::ensure_consumers(js, &["inventory-orders"]).await?.remove(0);
    definition.retry = topology::Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(40),
    };
    Ok(definition)
}

async fn dlq_messages(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    Ok(js.get_stream("DLQ").await?.info().await?.state.messages)
}

/// Fails transiently until `failures` attempts have failed, then succeeds.
struct Flaky {
    failures: usize,
    attempts: AtomicUsize,
    handled: AtomicUsize,
}

impl EventHandler for Flaky {
    async fn handle(&self, _event: IncomingEvent) -> Result<(), HandleError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(HandleError::Retry("database: connection refused".into()));
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_transient_failure_is_retried_past_any_delivery_limit_and_never_parked() -> anyhow::Result<()> {
    let (_nats, js) = broker().await?;
    let definition = consumer(&js).await?;
    // More failed attempts than any delivery limit a consumer used to have.
    let handler = Arc::new(Flaky {
        failures: 12,
        attempts: AtomicUsize::new(0),
        handled: AtomicUsize::new(0),
    });
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer::run(
        js.clone(),
        definition,
        handler.clone(),
        4,
        shutdown.clone(),
    ));

    publish(&js, "o-1").await?;
    let outcome = eventually("the event to be handled", async || {
        Ok(handler.handled.load(Ordering::SeqCst) == 1)
    })
    .await;
    shutdown.cancel();
    running.await?;
    outcome?;
    assert_eq!(handler.attempts.load(Ordering::SeqCst), 13);
    assert_eq!(dlq_messages(&js).await?, 0, "a transient failure is never parked");
    Ok(())
}

/// Rejects everything: every event is poison.
struct Poisoned {
    attempts: AtomicUsize,
}

impl EventHandler for Poisoned {
    async fn handle(&self, _event: IncomingEvent) -> Result<(), HandleError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Err(HandleError::Reject("a rule that can never pass".into()))
    }
}

#[tokio::test]
async fn poison_that_cannot_be_parked_yet_is_kept_until_it_can_be() -> anyhow::Result<()> {
    let (_nats, js) = broker().await?;
    let definition = consumer(&js).await?;
    // The DLQ is gone (full, or its node down): parking fails.
    js.delete_stream("DLQ").await?;
    let handler = Arc::new(Poisoned {
        attempts: AtomicUsize::new(0),
    });
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer::run(
        js.clone(),
        definition,
        handler.clone(),
        4,
        shutdown.clone(),
    ));

    publish(&js, "o-poison").await?;
    let outcome = async {
        // Past the delivery on which a bounded consumer gives up for good.
        eventually("ten attempts to park", async || {
            Ok(handler.attempts.load(Ordering::SeqCst) >= 10)
        })
        .await?;
        topology::ensure_streams(&js).await?;
        eventually("the event on the DLQ", async || Ok(dlq_messages(&js).await? == 1)).await
    }
    .await;
    shutdown.cancel();
    running.await?;
    outcome
}

/// Takes a while per event and counts the attempts per event.
struct Slow {
    attempts: Mutex<HashMap<String, usize>>,
}

impl EventHandler for Slow {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
        *self
            .attempts
            .lock()
            .expect("not poisoned")
            .entry(event.subject.clone())
            .or_default() += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
        Ok(())
    }
}

#[tokio::test]
async fn messages_waiting_their_turn_are_not_redelivered() -> anyhow::Result<()> {
    let (_nats, js) = broker().await?;
    let mut definition = consumer(&js).await?;
    // Short enough that a message buffered behind a few slow ones would
    // time out unseen.
    definition.config.ack_wait = Duration::from_secs(1);
    js.get_stream("ORDERS")
        .await?
        .create_consumer(definition.config.clone())
        .await?;
    let handler = Arc::new(Slow {
        attempts: Mutex::new(HashMap::new()),
    });
    for n in 0..10 {
        publish(&js, &format!("o-{n}")).await?;
    }
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer::run(
        js.clone(),
        definition,
        handler.clone(),
        1,
        shutdown.clone(),
    ));

    let outcome = eventually("every event handled", async || {
        Ok(handler.attempts.lock().expect("not poisoned").len() == 10)
    })
    .await;
    // Time for a wrongly redelivered message to show.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    shutdown.cancel();
    running.await?;
    outcome?;
    let attempts = handler.attempts.lock().expect("not poisoned").clone();
    let repeated: Vec<_> = attempts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "handled more than once: {repeated:?}");
    Ok(())
}

/// Hangs on the first attempt (a call that never returns), then succeeds.
struct HangsOnce {
    attempts: AtomicUsize,
    handled: AtomicUsize,
}

impl EventHandler for HangsOnce {
    async fn handle(&self, _event: IncomingEvent) -> Result<(), HandleError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            std::future::pending::<()>().await;
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_hung_handler_is_given_up_on_and_the_message_retried() -> anyhow::Result<()> {
    let (_nats, js) = broker().await?;
    let mut definition = consumer(&js).await?;
    definition.handler_timeout = Duration::from_millis(300);
    let handler = Arc::new(HangsOnce {
        attempts: AtomicUsize::new(0),
        handled: AtomicUsize::new(0),
    });
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer::run(
        js.clone(),
        definition,
        handler.clone(),
        1,
        shutdown.clone(),
    ));

    publish(&js, "o-hang").await?;
    let outcome = eventually("the event handled on a later delivery", async || {
        Ok(handler.handled.load(Ordering::SeqCst) == 1)
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running).await??;
    outcome?;
    assert_eq!(handler.attempts.load(Ordering::SeqCst), 2);
    Ok(())
}
