//! NATS connection and JetStream context.

use std::time::Duration;

use async_nats::{ConnectOptions, jetstream};

/// Connects (retrying in the background if the server is not up yet) and
/// returns the client and a JetStream context whose publishes wait at most
/// a few seconds for their PubAck.
pub async fn connect(
    url: &str,
    name: &str,
) -> Result<(async_nats::Client, jetstream::Context), async_nats::ConnectError> {
    let client = ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(5));
    Ok((client, js))
}
