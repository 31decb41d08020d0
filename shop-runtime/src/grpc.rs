//! gRPC server bootstrap: health and reflection on every service's port.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::transport::{Server, server::Router};
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

use crate::trace::TraceLayer;
use tonic_reflection::server::{v1, v1alpha};

/// Server reflection, v1 and v1alpha, listing exactly `public_services`
/// (and gRPC health), described from the shop's descriptor set.
pub fn reflection(
    public_services: &[&'static str],
) -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for name in public_services.iter().copied().chain(["grpc.health.v1.Health"]) {
            builder = builder.with_service_name(name);
        }
        builder
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// A service's gRPC router: every request runs in its trace context.
pub type ServiceRouter = Router<Stack<TraceLayer, Identity>>;

/// A server builder with gRPC health and reflection for the given public
/// services already added. Returns the health reporter so the service can
/// flip its status.
pub fn router_with_basics(
    public_services: &[&'static str],
) -> Result<(ServiceRouter, HealthReporter), tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let (v1, v1alpha) = reflection(public_services)?;
    let router = Server::builder()
        .layer(TraceLayer)
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha);
    Ok((router, reporter))
}

/// Accepted connections with Nagle's algorithm off: gRPC writes a response
/// as several small HTTP/2 frames, and with Nagle on the later ones wait for
/// the peer's delayed ACK (about 40 ms).
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    router: ServiceRouter,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    router.serve_with_incoming_shutdown(incoming(listener), shutdown).await
}

/// How a service calls another: the same settings in every caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// `UPSTREAM_TIMEOUT`: the deadline of one call (default 2s).
    pub timeout: std::time::Duration,
    /// `UPSTREAM_CONNECT_TIMEOUT`: how long dialling may take (default
    /// 250ms), so an unreachable host fails fast.
    pub connect_timeout: std::time::Duration,
    /// `UPSTREAM_BREAKER_FAILURES`, `UPSTREAM_BREAKER_COOL_DOWN`.
    pub breaker: crate::breaker::BreakerSettings,
}

impl UpstreamSettings {
    pub fn read(env: &mut crate::config::EnvReader) -> Self {
        let settings = Self {
            timeout: env.duration("UPSTREAM_TIMEOUT", std::time::Duration::from_secs(2)),
            connect_timeout: env.duration("UPSTREAM_CONNECT_TIMEOUT", std::time::Duration::from_millis(250)),
            breaker: crate::breaker::BreakerSettings::read(env),
        };
        for (key, value) in [
            ("UPSTREAM_TIMEOUT", settings.timeout),
            ("UPSTREAM_CONNECT_TIMEOUT", settings.connect_timeout),
        ] {
            if value < std::time::Duration::from_millis(1) {
                env.problem(format!("{key} must be at least 1ms"));
            }
        }
        settings
    }

    /// A channel to the upstream at `url` (dialled on first use,
    /// reconnecting after failures) and the breaker in front of it.
    pub fn client(
        &self,
        upstream: &'static str,
        url: &str,
    ) -> Result<(tonic::transport::Channel, crate::breaker::CircuitBreaker), tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .connect_timeout(self.connect_timeout.min(self.timeout))
            .timeout(self.timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok((channel, self.breaker.breaker(upstream)))
    }
}
