//! How a consumer treats failures, against a real nats-server: transient
//! ones are retried for hours, poison is parked, and no message is dropped
//! on the way (not by the delivery limit, which parks, not by a DLQ that is
//! down, not by waiting in a buffer).

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use crate::support;
use shop_runtime::{
    consumer::{EventHandler, HandleError},
    event::IncomingEvent,
    topology::{self, ConsumerDefinition},
};

use support::{RunningConsumer, Scripted, Step, Tally, broker, eventually, publish_placed as publish, stream_messages};

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
    stream_messages(js, "DLQ").await
}

#[tokio::test]
async fn a_transient_failure_is_retried_until_it_passes_and_never_parked() -> anyhow::Result<()> {
    let (_nats, js) = broker().await?;
    // Fails transiently for more attempts than the delivery limit a
    // consumer used to have, then succeeds.
    let handler = Arc::new(Scripted::new(|attempt| match attempt {
        0..12 => Step::Retry("database: connection refused"),
        _ => Step::Handle,
    }));
    let running = RunningConsumer::spawn(&js, consumer(&js).await?, handler.clone(), 4);

    publish(&js, "o-1").await?;
    let outcome = eventually("the event to be handled", async || {
        Ok(handler.handled.load(Ordering::SeqCst) == 1)
    })
    .await;
    running.stop().await?;
    outcome?;
    assert_eq!(handler.attempts.load(Ordering::SeqCst), 13);
    assert_eq!(dlq_messages(&js).await?, 0, "a transient failure is never parked");
    Ok(())
}

/// `definition` with `max_deliver` and `ack_wait` set, on the server too.
async fn limited(
    js: &async_nats::jetstream::Context,
    mut definition: ConsumerDefinition,
    max_deliver: i64,
    ack_wait: Duration,
) -> anyhow::Result<ConsumerDefinition> {
    definition.config.max_deliver = max_deliver;
    definition.config.ack_wait = ack_wait;
    js.get_stream(definition.stream)
        .await?
        .update_consumer(definition.config.clone())
        .await?;
    Ok(definition)
}

/// The error a parked message of `o-1` carries.
async fn parked_error(js: &async_nats::jetstream::Context) -> anyhow::Result<String> {
    let parked = js
        .get_stream("DLQ")
        .await?
        .get_last_raw_message_by_subject("dlq.inventory-orders.orders.placed.o-1")
        .await?;
    Ok(parked
        .headers
        .get(shop_runtime::consumer::HEADER_DLQ_ERROR)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default())
}

#[tokio::test]
async fn a_transient_failure_that_outlasts_the_delivery_limit_is_parked_not_dropped() -> anyhow::Result<()> {
    let (_nats, js) = broker().await?;
    let definition = limited(&js, consumer(&js).await?, 3, Duration::from_secs(30)).await?;
    // A bug that looks transient: it never passes.
    let handler = Arc::new(Scripted::new(|_| {
        Step::Retry("database: relation \"stok\" does not exist")
    }));
    let running = RunningConsumer::spawn(&js, definition, handler.clone(), 4);

    publish(&js, "o-1").await?;
    let outcome = eventually("the event on the DLQ", async || Ok(dlq_messages(&js).await? == 1)).await;
    running.stop().await?;
    outcome?;
    assert_eq!(
        handler.attempts.load(Ordering::SeqCst),
        3,
        "one attempt per delivery allowed"
    );
    let error = parked_error(&js).await?;
    assert!(error.starts_with("gave up after 3 deliveries"), "{error}");
    assert!(error.contains("stok"), "the last error is kept: {error}");
    Ok(())
}

#[tokio::test]
async fn an_event_the_server_gives_up_on_without_an_outcome_is_parked() -> anyhow::Result<()> {
    let (_nats, js) = broker().await?;
    let definition = limited(&js, consumer(&js).await?, 2, Duration::from_secs(1)).await?;
    // The handler never ends, and the process dies under it: no outcome
    // reaches the server, twice.
    let handler = Arc::new(Scripted::new(|_| Step::Hang));
    publish(&js, "o-1").await?;
    for deliveries in 1..=2 {
        let running = RunningConsumer::spawn(&js, definition.clone(), handler.clone(), 4);
        let delivered = eventually("a delivery", async || {
            Ok(handler.attempts.load(Ordering::SeqCst) == deliveries)
        })
        .await;
        running.crash().await;
        delivered?;
    }
    // The next replica to run hears the server give up on it, and parks it.
    let running = RunningConsumer::spawn(&js, definition, handler.clone(), 4);
    let outcome = eventually("the event on the DLQ", async || Ok(dlq_messages(&js).await? == 1)).await;
    running.stop().await?;
    outcome?;
    assert_eq!(
        handler.attempts.load(Ordering::SeqCst),
        2,
        "not delivered past its limit"
    );
    let error = parked_error(&js).await?;
    assert!(error.contains("delivered 2 times without an outcome"), "{error}");
    Ok(())
}

#[tokio::test]
async fn poison_that_cannot_be_parked_yet_is_kept_until_it_can_be() -> anyhow::Result<()> {
    let (_nats, js) = broker().await?;
    let definition = consumer(&js).await?;
    // The DLQ is gone (full, or its node down): parking fails.
    js.delete_stream("DLQ").await?;
    // Every event is poison.
    let handler = Arc::new(Scripted::new(|_| Step::Reject("a rule that can never pass")));
    let running = RunningConsumer::spawn(&js, definition, handler.clone(), 4);

    publish(&js, "o-poison").await?;
    let outcome = async {
        // Past the delivery on which a bounded consumer gives up for good.
        eventually("ten attempts to park", async || {
            Ok(handler.attempts.load(Ordering::SeqCst) >= 10)
        })
        .await?;
        topology::ensure_streams(&js, 1).await?;
        eventually("the event on the DLQ", async || Ok(dlq_messages(&js).await? == 1)).await
    }
    .await;
    running.stop().await?;
    outcome
}

/// Takes a while per event and counts the attempts per event.
struct Slow {
    attempts: Tally<String>,
}

impl EventHandler for Slow {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
        self.attempts.add(event.subject.clone());
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
    let handler = Arc::new(Slow { attempts: Tally::new() });
    for n in 0..10 {
        publish(&js, &format!("o-{n}")).await?;
    }
    let running = RunningConsumer::spawn(&js, definition, handler.clone(), 1);

    let outcome = eventually("every event handled", async || Ok(handler.attempts.keys() == 10)).await;
    // Time for a wrongly redelivered message to show.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    running.stop().await?;
    outcome?;
    let attempts = handler.attempts.counts();
    let repeated: Vec<_> = attempts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "handled more than once: {repeated:?}");
    Ok(())
}

#[tokio::test]
async fn a_hung_handler_is_given_up_on_and_the_message_retried() -> anyhow::Result<()> {
    let (_nats, js) = broker().await?;
    let mut definition = consumer(&js).await?;
    definition.handler_timeout = Duration::from_millis(300);
    // Hangs on the first attempt (a call that never returns), then succeeds.
    let handler = Arc::new(Scripted::new(|attempt| match attempt {
        0 => Step::Hang,
        _ => Step::Handle,
    }));
    let running = RunningConsumer::spawn(&js, definition, handler.clone(), 1);

    publish(&js, "o-hang").await?;
    let outcome = eventually("the event handled on a later delivery", async || {
        Ok(handler.handled.load(Ordering::SeqCst) == 1)
    })
    .await;
    running.stop_within(Duration::from_secs(5)).await?;
    outcome?;
    assert_eq!(handler.attempts.load(Ordering::SeqCst), 2);
    Ok(())
}
