//! A payment provider emulator: a Stripe-shaped JSON HTTP API that a shop
//! points at in development, and that tests, chaos runs and the storefront
//! use in place of a real provider.
//!
//! - [`domain`]: intents, refunds, events, the test cards and the state
//!   machine (pure).
//! - `journal` and `book`: the append-only journal and the state it
//!   rebuilds; a restart loses nothing.
//! - `engine`: the commands, one at a time: decide, journal, apply, then
//!   timers and webhooks.
//! - `webhooks`: signed deliveries of every event, retried until a 2xx.
//! - `api` (`/v1`), `authenticate` (the 3-D Secure page), `admin` (`/admin`) and `serve` (HTTP/1, with answers
//!   that can be lost): the HTTP adapters.
//! - [`Faults`]: the knobs of `/admin/faults`; [`admin_client`]: that API
//!   and the ledger, called from outside (test stacks, fault runs, `cargo
//!   xtask verify`).
//! - [`config`]: `PROVIDER_*` settings.
//!
//! See README.md for the API, the test cards, webhooks and fault knobs.

mod admin;
pub mod admin_client;
mod api;
mod authenticate;
mod book;
pub mod config;
pub mod domain;
mod engine;
mod faults;
mod journal;
mod serve;
mod webhooks;

use axum::{Router, routing::get};
use shop_runtime::registry::ServiceSpec;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use faults::{Faults, WebhookFaults};
pub use journal::JournalError;

/// Answers `ok` while the provider serves.
pub(crate) const LIVEZ: &str = "/livez";

/// The emulator as telemetry names it. It is no service of the platform
/// (not in the registry): it has no gRPC port and no admin port of its own.
pub const SERVICE: ServiceSpec = ServiceSpec {
    name: "payment-provider",
    short: "provider",
    grpc_port: 0,
    admin_port: 0,
    database: None,
    redis: false,
    serves: &[],
    url_vars: &[],
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot read the listening address: {0}")]
    Listener(#[source] std::io::Error),
}

/// Why [`serve_from_env`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] shop_runtime::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Run(#[from] Error),
}

/// What the `payment-provider` binary does: settings from the environment,
/// telemetry, listen, serve until SIGINT or SIGTERM. Also how the test
/// stacks run it as a process of its own.
pub async fn serve_from_env() -> Result<(), ServeError> {
    let config = Config::from_env()?;
    let telemetry = shop_runtime::telemetry::init(Some(config.log_format), &SERVICE, &config.tracing);
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen_addr,
            source,
        })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shop_runtime::shutdown_on_signal(shutdown.clone()));
    let ran = run(config, listener, shutdown).await;
    telemetry.shutdown().await;
    Ok(ran?)
}

/// Serves the provider on `listener` until `shutdown` is cancelled, then
/// waits for its timers and deliveries to stop: when it returns, nothing
/// writes to the data directory any more.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
    let public_url = match &config.public_url {
        Some(url) => url.clone(),
        None => format!("http://{}", listener.local_addr().map_err(Error::Listener)?),
    };
    let settings = engine::Settings {
        public_url: public_url.clone(),
        async_delay: config.async_delay,
    };
    let webhooks = config
        .webhook
        .as_ref()
        .map(|hooks| webhooks::Webhooks::new(hooks, config.webhook_horizon, config.webhook_first_retry));
    let provider = engine::Provider::open(&config.data_dir, settings, webhooks, shutdown.clone())?;
    provider.resume().await;
    let app = Router::new()
        .merge(api::routes().layer(axum::middleware::from_fn_with_state(provider.clone(), faults::v1)))
        .merge(authenticate::routes())
        .merge(admin::routes())
        .route(LIVEZ, get(|| async { "ok\n" }))
        .fallback(api::unknown_route)
        .with_state(provider.clone());
    tracing::info!(%public_url, webhooks = config.webhook.is_some(), "payment provider listening");
    serve::serve(listener, app, shutdown).await;
    provider.tasks.close();
    provider.tasks.wait().await;
    Ok(())
}
