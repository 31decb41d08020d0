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

/// A client channel to another service: dials on first use and reconnects
/// after failures; `connect_timeout` bounds how long a dead address can
/// hold a call, `timeout` bounds each call.
pub fn lazy_channel(
    url: &str,
    timeout: std::time::Duration,
    connect_timeout: std::time::Duration,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}
