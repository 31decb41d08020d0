//! Operating the dead-letter stream against a real nats-server: parked
//! messages are listed with their cause, and re-driven to their original
//! subject with their event id, once.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use shop_runtime::{
    consumer::{EventHandler, HandleError},
    dlq::{self, Filter},
    event::IncomingEvent,
    topology,
};
use uuid::Uuid;

use crate::support;

use support::{RunningConsumer, Tally, broker, eventually, publish_placed as publish};

/// Rejects everything until the bug is fixed; then counts what it applies,
/// by event id.
struct Buggy {
    fixed: AtomicBool,
    applied: Tally<Uuid>,
}

impl EventHandler for Buggy {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
        if !self.fixed.load(Ordering::SeqCst) {
            return Err(HandleError::Reject("a bug, fixed in the next release".into()));
        }
        self.applied.add(event.event_id);
        Ok(())
    }
}

#[tokio::test]
async fn parked_messages_are_listed_and_redriven_once_with_their_event_id() -> anyhow::Result<()> {
    let (_nats, js) = broker().await?;
    let definition = topology::ensure_consumers(&js, &["inventory-orders"]).await?.remove(0);
    let handler = Arc::new(Buggy {
        fixed: AtomicBool::new(false),
        applied: Tally::new(),
    });
    let running = RunningConsumer::spawn(&js, definition, handler.clone(), 2);

    let first = publish(&js, "o-1").await?;
    let second = publish(&js, "o-2").await?;
    let all = Filter::default();
    eventually("both parked", async || Ok(dlq::list(&js, &all).await?.len() == 2)).await?;

    let parked = dlq::list(&js, &all).await?;
    assert_eq!(parked[0].subject, "orders.placed.o-1");
    assert_eq!(parked[0].consumer, "inventory-orders");
    assert_eq!(parked[0].stream, "ORDERS");
    assert_eq!(parked[0].event_id, first.to_string());
    assert!(parked[0].error.contains("a bug"), "{}", parked[0].error);
    let by_subject = Filter {
        subject: Some("orders.placed.o-2".into()),
        ..Filter::default()
    };
    assert_eq!(dlq::list(&js, &by_subject).await?.len(), 1);
    let other_consumer = Filter {
        consumer: Some("payment-orders".into()),
        ..Filter::default()
    };
    assert!(dlq::list(&js, &other_consumer).await?.is_empty());

    // The fix is deployed; re-drive one subject, then everything.
    handler.fixed.store(true, Ordering::SeqCst);
    let redriven = dlq::redrive(&js, &by_subject).await?;
    assert_eq!(redriven.len(), 1);
    assert!(redriven[0].published);
    assert!(dlq::redrive(&js, &by_subject).await?.is_empty(), "gone from the DLQ");
    assert_eq!(dlq::redrive(&js, &all).await?.len(), 1);
    assert!(dlq::list(&js, &all).await?.is_empty());

    let outcome = eventually("both applied", async || Ok(handler.applied.keys() == 2)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.stop().await?;
    outcome?;
    let applied = handler.applied.counts();
    assert_eq!(applied.get(&first), Some(&1), "with its own event id, once");
    assert_eq!(applied.get(&second), Some(&1));
    Ok(())
}
