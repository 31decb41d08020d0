//! svc-gateway binary: configuration → telemetry → run.

use shop_runtime::{CancellationToken, Listeners, telemetry};
use svc_gateway::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env().map_err(|e| anyhow::anyhow!("{e}"))?;
    telemetry::init(config.basics.log_format);
    let listeners = Listeners::bind(&config.basics).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shop_runtime::shutdown_on_signal(shutdown.clone()));
    Ok(svc_gateway::run(config, listeners, shutdown).await?)
}
