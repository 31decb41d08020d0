//! gRPC server bootstrap: health and reflection on every service's port.

use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Server, server::Router};
use tonic_health::server::HealthReporter;

/// A server builder with gRPC health and reflection (v1 and v1alpha) for the
/// given public services already added. Returns the health reporter so the
/// service can flip its status.
pub fn router_with_basics(
    public_services: &[&'static str],
) -> Result<(Router, HealthReporter), tonic_reflection::server::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let mut v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let mut v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for name in public_services.iter().copied().chain(["grpc.health.v1.Health"]) {
        v1 = v1.with_service_name(name);
        v1alpha = v1alpha.with_service_name(name);
    }
    let router = Server::builder()
        .add_service(health)
        .add_service(v1.build_v1()?)
        .add_service(v1alpha.build_v1alpha()?);
    Ok((router, reporter))
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    router
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
