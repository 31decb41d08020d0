//! NATS connection and JetStream context.

use std::time::Duration;

use async_nats::{ConnectOptions, jetstream};

/// Connects (retrying in the background if the server is not up yet) and
/// returns the client and a JetStream context whose publishes wait at most
/// a few seconds for their PubAck. `url` may list the nodes of a cluster,
/// comma-separated; the client moves to another when one goes.
pub async fn connect(
    url: &str,
    name: &str,
) -> Result<(async_nats::Client, jetstream::Context), async_nats::ConnectError> {
    let servers = servers(url)
        .map_err(|e| async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::ServerParse, e))?;
    let client = ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .connect(servers)
        .await?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(5));
    Ok((client, js))
}

/// The servers of a `NATS_URL`: one URL, or several, comma-separated.
pub fn servers(url: &str) -> Result<Vec<async_nats::ServerAddr>, std::io::Error> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect()
}
