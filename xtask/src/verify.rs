//! `cargo xtask verify`: the books of the stack of `cargo xtask up` (or of
//! `DATABASE_URL`, `NATS_URL` and `PAYMENT_PROVIDER_URL`), checked by
//! `shop_verify`.

use anyhow::{Context, bail};
use shop_infra::infra;
use shop_provider::admin_client::AdminClient;
use shop_runtime::{
    db,
    registry::{self, ServiceSpec},
};

use crate::layout;

/// The four service databases on the PostgreSQL server at `server_url`,
/// under the names `up` gives them.
pub(crate) async fn databases(server_url: &str) -> anyhow::Result<shop_verify::Databases> {
    let connect = |service: &'static ServiceSpec| async move {
        let name = service
            .database
            .with_context(|| format!("{} has no database", service.name))?;
        let url = infra::database_url(server_url, name);
        db::connect(&url, 2, db::Limits::default())
            .await
            .with_context(|| format!("connecting to {name} at {server_url}"))
    };
    Ok(shop_verify::Databases {
        order: connect(&registry::ORDER).await?,
        inventory: connect(&registry::INVENTORY).await?,
        payment: connect(&registry::PAYMENT).await?,
        notify: connect(&registry::NOTIFY).await?,
    })
}

pub(crate) async fn run() -> anyhow::Result<()> {
    let servers = layout::servers_from_env()?;
    let databases = databases(&servers.postgres).await?;
    let (_, js) = shop_runtime::nats::connect(&servers.nats, "xtask-verify")
        .await
        .with_context(|| format!("connecting to NATS at {}", servers.nats))?;
    let mut options = shop_verify::Options::new(chrono::Utc::now());
    if let Some(deadline) = std::env::var("ORDER_DEADLINE").ok().filter(|v| !v.is_empty()) {
        options.order_deadline = shop_runtime::config::parse_duration(&deadline)
            .with_context(|| format!("ORDER_DEADLINE={deadline} is not a duration such as 30m or 90s"))?;
    }
    let provider = AdminClient::new(&servers.provider);
    let report = shop_verify::check(&databases, &provider, Some(&js), &options).await?;
    println!("{report}");
    if !report.is_clean() {
        bail!("{} violation(s)", report.violations());
    }
    Ok(())
}
