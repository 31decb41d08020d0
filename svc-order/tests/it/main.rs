//! svc-order against the real stack, one module per subject (one test
//! binary, linked once).

mod payment_wait;
mod refunds;

use async_nats::jetstream::{self, message::PublishMessage};
use shop_harness::eventually;
use shop_runtime::event::{self, Event, OutgoingEvent};

type TestResult = anyhow::Result<()>;

/// Publishes `event` as svc-payment's outbox would.
async fn publish<E: Event>(js: &jetstream::Context, event: &E) -> TestResult {
    let out = OutgoingEvent::new(event)?;
    let headers = event::headers(
        out.event_id,
        out.event_type,
        "svc-payment",
        &out.key,
        out.occurred_at,
        &Default::default(),
    );
    let message = PublishMessage::build().payload(out.payload.into()).headers(headers);
    js.send_publish(out.subject, message).await?.await?;
    Ok(())
}

/// Waits until svc-order's consumer `name` has handled everything it got.
async fn handled(js: &jetstream::Context, name: &str) -> TestResult {
    eventually(&format!("{name} to be idle"), || async {
        let backlogs = shop_runtime::topology::backlogs(js).await?;
        let backlog = backlogs.iter().find(|b| b.consumer == name);
        Ok(backlog.is_some_and(|b| b.state.is_some() && b.is_idle()).then_some(()))
    })
    .await
}
