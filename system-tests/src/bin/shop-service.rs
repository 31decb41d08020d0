//! Any service of the platform in one binary, `shop-service <svc-order|
//! svc-inventory|…>`, started exactly as its own binary starts it
//! (`shop_runtime::entry`); `shop-service payment-provider` runs the payment
//! provider emulator as its binary does. Cargo builds it for this crate's
//! tests, so the separate-process tests need nothing but `cargo test`.

use shop_harness::Service;
use shop_runtime::registry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_default();
    if name == shop_provider::SERVICE.name {
        shop_provider::serve_from_env().await?;
        return Ok(());
    }
    let Some(service) = registry::by_name(&name).and_then(Service::of) else {
        let mut names: Vec<&str> = registry::ALL.iter().map(|s| s.name).collect();
        names.push(shop_provider::SERVICE.name);
        anyhow::bail!("unknown service {name:?}: use one of {}", names.join(", "));
    };
    service.serve_from_env().await?;
    Ok(())
}
