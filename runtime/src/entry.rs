//! What every service binary does: configuration from the environment →
//! telemetry → bind → run until SIGINT/SIGTERM. Shared, so the shipped
//! binaries and the multi-service test binary start services the same way.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::{
    Listeners,
    config::{ConfigError, HasBasics},
    telemetry,
};

/// Every message and call allocates small, short-lived buffers (frames,
/// JSON, protobuf); under load glibc's malloc and free took about a tenth
/// of the services' CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
    #[error("{0}")]
    Run(Box<dyn std::error::Error + Send + Sync>),
}

/// Runs a service the way its binary does.
pub async fn serve_from_env<C, R, F, E>(
    read_config: impl FnOnce() -> Result<C, ConfigError>,
    run: R,
) -> Result<(), EntryError>
where
    C: HasBasics,
    R: FnOnce(C, Listeners, CancellationToken) -> F,
    F: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let config = read_config()?;
    let basics = config.basics().clone();
    let telemetry = telemetry::init(Some(basics.log_format), basics.service, &basics.tracing);
    let listeners = Listeners::bind(&basics).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::shutdown_on_signal(shutdown.clone()));
    let ran = run(config, listeners, shutdown).await;
    // The spans of the last calls, shutdown's included.
    telemetry.shutdown().await;
    ran.map_err(|e| EntryError::Run(Box::new(e)))
}
