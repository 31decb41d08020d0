//! Any service of the platform in one binary, `shop-service <svc-order|
//! svc-inventory|…>`, started exactly as its own binary starts it
//! (`shop_runtime::entry`). Cargo builds it for this crate's tests, so the
//! separate-process tests need nothing but `cargo test`.

use shop_harness::Service;
use shop_runtime::registry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(service) = registry::by_name(&name).and_then(Service::of) else {
        let names: Vec<&str> = registry::ALL.iter().map(|s| s.name).collect();
        anyhow::bail!("unknown service {name:?}: use one of {}", names.join(", "));
    };
    service.serve_from_env().await?;
    Ok(())
}
