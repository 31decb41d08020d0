//! svc-cart binary: configuration → telemetry → run (see `shop_runtime::entry`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shop_runtime::entry::serve_from_env(svc_cart::Config::from_env, svc_cart::run).await?;
    Ok(())
}
