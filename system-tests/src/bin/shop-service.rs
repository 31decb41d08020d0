//! The saga services in one binary, `shop-service <svc-order|svc-inventory|
//! svc-payment|svc-notify>`, started exactly as their own binaries start
//! them (`shop_runtime::entry`). Cargo builds it for this crate's tests, so
//! the separate-process tests need nothing but `cargo test`.

use shop_runtime::entry::serve_from_env;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let service = std::env::args().nth(1).unwrap_or_default();
    match service.as_str() {
        "svc-order" => serve_from_env(svc_order::Config::from_env, |c| &c.basics, svc_order::run).await?,
        "svc-inventory" => serve_from_env(svc_inventory::Config::from_env, |c| &c.basics, svc_inventory::run).await?,
        "svc-payment" => serve_from_env(svc_payment::Config::from_env, |c| &c.basics, svc_payment::run).await?,
        "svc-notify" => serve_from_env(svc_notify::Config::from_env, |c| &c.basics, svc_notify::run).await?,
        other => anyhow::bail!("unknown service {other:?}: use svc-order, svc-inventory, svc-payment or svc-notify"),
    }
    Ok(())
}
