//! svc-notify binary: configuration → telemetry → run (see `shop_runtime::entry`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shop_runtime::entry::serve_from_env(svc_notify::Config::from_env, svc_notify::run).await?;
    Ok(())
}
