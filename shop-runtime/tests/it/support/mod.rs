//! What the consumer tests share: a broker with the streams, an
//! `orders.placed` to publish, and waiting for an outcome.

use std::time::Duration;

use shop_infra::NatsServer;
use shop_runtime::topology;
use uuid::Uuid;

/// A nats-server of the test's own, with every stream.
pub(crate) async fn broker() -> anyhow::Result<(NatsServer, async_nats::jetstream::Context)> {
    let nats = NatsServer::start().await?;
    let (_, js) = shop_runtime::nats::connect(&nats.url(), "test").await?;
    topology::ensure_streams(&js).await?;
    Ok((nats, js))
}

/// Publishes an `orders.placed` for `order`; returns its event id.
pub(crate) async fn publish_placed(js: &async_nats::jetstream::Context, order: &str) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    let headers = shop_runtime::event::headers(
        id,
        "shop.events.v1.OrderPlaced",
        "test",
        order,
        chrono::Utc::now(),
        None,
    );
    let body = format!(r#"{{"orderId":"{order}"}}"#);
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(body.into())
        .headers(headers);
    js.send_publish(format!("orders.placed.{order}"), message)
        .await?
        .await?;
    Ok(id)
}

/// Polls `done` for up to ten seconds.
pub(crate) async fn eventually(what: &str, mut done: impl AsyncFnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    for _ in 0..400 {
        if done().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}
