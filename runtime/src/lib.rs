//! Shared runtime of the shop services.
//!
//! - [`registry`]: every service of the platform, its ports, database, the
//!   gRPC services it serves and how others find it.
//! - [`entry`] and [`host`]: a service's life — config, telemetry, connect,
//!   migrate, spawn its tasks, serve, stop every task on shutdown.
//! - [`config`]: typed settings from the environment, all problems at once;
//!   [`webhook_secret`]: the payment provider's webhook signing secret.
//! - [`telemetry`] and [`trace`]: tracing setup; one trace id per checkout,
//!   carried through every event.
//! - [`grpc`] and [`admin`]: the gRPC server with health and reflection, and
//!   the admin HTTP port; [`grpc_metrics`]: RED metrics of every call.
//! - [`identity`]: the caller as the gateway passes it; [`memo`]: tokens
//!   verified or signed, kept while they hold.
//! - [`api_error`]: `ApiError`, the one mapping of a request's failure to its
//!   gRPC status; internal failures are logged, never echoed.
//! - [`values`]: validated value types shared by the domains.
//! - [`breaker`]: the circuit breaker in front of an upstream;
//!   [`upstream`]: the replicas of a service called, each call to a serving
//!   one.
//! - [`series`]: the name of every metric the platform exports.
//! - [`db`] and [`nats`]: Postgres pool, migrations, constraint names; the
//!   NATS connection.
//! - [`event`], [`topology`], [`outbox`], [`inbox`], [`consumer`], [`dlq`]:
//!   the messaging rules of the checkout saga (see ARCHITECTURE.md).

pub mod admin;
pub mod api_error;
pub mod breaker;
pub mod config;
pub mod consumer;
pub mod db;
pub mod dlq;
pub mod entry;
pub mod event;
pub mod grpc;
pub mod grpc_metrics;
pub mod host;
pub mod identity;
pub mod inbox;
pub mod memo;
pub mod nats;
pub mod outbox;
pub mod registry;
pub mod series;
pub mod telemetry;
pub mod topology;
pub mod trace;
pub mod upstream;
pub mod webhook_secret;

pub use tokio_util::sync::CancellationToken;
pub mod values;

/// The two sockets a service listens on. Tests bind port 0 and pass them in.
pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
    pub admin: tokio::net::TcpListener,
}

impl Listeners {
    pub async fn bind(basics: &config::ServiceBasics) -> std::io::Result<Self> {
        Ok(Self {
            grpc: tokio::net::TcpListener::bind(basics.grpc_addr).await?,
            admin: tokio::net::TcpListener::bind(basics.admin_addr).await?,
        })
    }

    /// Both on free loopback ports.
    pub async fn ephemeral() -> std::io::Result<Self> {
        Ok(Self {
            grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            admin: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        })
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM.
pub async fn shutdown_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    token.cancel();
}
