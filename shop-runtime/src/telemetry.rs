//! Logging and tracing setup.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber (`RUST_LOG`, default `info`). Safe to call
/// more than once (tests run many services in one process): later calls are
/// no-ops.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn,h2=warn,tower=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    // JSON lines carry the fields of every span they are in (the request's
    // or the event's `trace_id`, its `order_id`), flattened, so a log
    // pipeline can search by them.
    let _ = match format.resolve() {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_current_span(true).with_span_list(true))
            .try_init(),
        LogFormat::Text | LogFormat::Auto => registry.with(fmt::layer().with_target(false)).try_init(),
    };
}
