//! gRPC server bootstrap: health and reflection on every service's port.

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;
use tonic::transport::{Server, server::Router};
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

use crate::{
    grpc_metrics::GrpcMetricsLayer,
    identity::{CallerLayer, IdentityVerifier},
    trace::TraceLayer,
};
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

/// A service's gRPC router: every request runs in its trace context, is
/// counted and timed ([`crate::grpc_metrics`]), and has its identity token
/// checked ([`crate::identity`]).
pub type ServiceRouter = Router<Stack<CallerLayer, Stack<GrpcMetricsLayer, Stack<TraceLayer, Identity>>>>;

/// The services every service's port answers besides its public ones.
pub const BASIC_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A server builder with gRPC health and reflection for the given public
/// services already added, whose callers are vouched for by `identity`.
/// Returns the health reporter so the service can flip its status.
pub fn router_with_basics(
    public_services: &[&'static str],
    identity: Arc<IdentityVerifier>,
) -> Result<(ServiceRouter, HealthReporter), tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let (v1, v1alpha) = reflection(public_services)?;
    let router = Server::builder()
        .layer(TraceLayer)
        .layer(GrpcMetricsLayer::new(
            public_services.iter().copied().chain(BASIC_SERVICES),
        ))
        .layer(CallerLayer::new(identity))
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
