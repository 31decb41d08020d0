//! The saga services in one binary, `shop-service <svc-order|svc-inventory|
//! svc-payment|svc-notify>`, started exactly as their own binaries start
//! them (`shop_runtime::entry`). Cargo builds it for this crate's tests, so
//! the separate-process tests need nothing but `cargo test`.

use shop_runtime::{entry::serve_from_env, registry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(spec) = registry::by_name(&name) else {
        anyhow::bail!("unknown service {name:?}: use svc-order, svc-inventory, svc-payment or svc-notify");
    };
    if *spec == registry::ORDER {
        serve_from_env(svc_order::Config::from_env, |c| &c.basics, svc_order::run).await?
    } else if *spec == registry::INVENTORY {
        serve_from_env(svc_inventory::Config::from_env, |c| &c.basics, svc_inventory::run).await?
    } else if *spec == registry::PAYMENT {
        serve_from_env(svc_payment::Config::from_env, |c| &c.basics, svc_payment::run).await?
    } else if *spec == registry::NOTIFY {
        serve_from_env(svc_notify::Config::from_env, |c| &c.basics, svc_notify::run).await?
    } else {
        anyhow::bail!("{name} is not a saga service this binary runs");
    }
    Ok(())
}
