//! The public port: HTTP/2 (gRPC) and HTTP/1.1 (gRPC-web) on one socket.
//! Every call passes CORS, then gRPC-web translation, then the [`Edge`],
//! so browsers reach the proxied services exactly like native clients.
//! With a storefront to serve, plain GET and HEAD requests get its files
//! (gRPC is always POST), so the page and its calls share one origin.
//! Before either, the payment provider's webhooks ([`webhooks::PATH`], any
//! method) go to [`Webhooks`], untouched by CORS, gRPC-web and the
//! storefront.

use std::time::Duration;

use futures::future::Either;
use http::{HeaderName, Method, header};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use shop_runtime::{CancellationToken, grpc::BASIC_SERVICES, grpc_metrics::GrpcMetricsLayer, trace::TraceLayer};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};

use crate::{
    config::CorsOrigins,
    edge::{ArrivedAsGrpcWeb, Edge, PeerAddr},
    error::{GRPC_RETRY_PUSHBACK_MS, RETRY_AFTER_MS},
    storefront::Storefront,
    webhooks::{self, Webhooks},
};

/// How long in-flight calls (streams included) may finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// CORS for the storefront: the allowed origins may POST gRPC-web with any
/// metadata and read the gRPC status and retry hints.
pub fn cors_layer(origins: &CorsOrigins) -> CorsLayer {
    let allow_origin = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.clone()),
        CorsOrigins::SameOriginOnly => AllowOrigin::list([]),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::POST])
        // gRPC-web metadata are request headers of any name.
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(ExposeHeaders::list([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            HeaderName::from_static(RETRY_AFTER_MS),
            HeaderName::from_static(GRPC_RETRY_PUSHBACK_MS),
            header::CONTENT_TYPE,
        ]))
        .max_age(Duration::from_secs(600))
}

/// Serves `edge`, `webhooks` and any `storefront` on `listener` until
/// `shutdown`, then lets in-flight calls finish for a grace period.
pub async fn serve(
    listener: TcpListener,
    edge: Edge,
    cors: CorsLayer,
    storefront: Option<Storefront>,
    webhooks: Webhooks,
    public_services: &[&'static str],
    shutdown: CancellationToken,
) {
    let stack = tower::ServiceBuilder::new()
        .layer(cors)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(GrpcMetricsLayer::new(
            public_services.iter().copied().chain(BASIC_SERVICES),
        ))
        .layer(TraceLayer)
        .service(edge);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(Some(1000));
    let graceful = GracefulShutdown::new();

    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let stack = stack.clone();
        let storefront = storefront.clone();
        let webhooks = webhooks.clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            if request.uri().path() == webhooks::PATH {
                return Either::Left(Either::Left(webhooks.serve(request, peer)));
            }
            if let Some(storefront) = &storefront
                && matches!(*request.method(), Method::GET | Method::HEAD)
            {
                return Either::Left(Either::Right(storefront.serve(request)));
            }
            request.extensions_mut().insert(PeerAddr(peer));
            let grpc_web = request
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc-web"));
            if grpc_web {
                request.extensions_mut().insert(ArrivedAsGrpcWeb);
            }
            Either::Right(stack.clone().oneshot(request))
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("calls still running after the shutdown grace period were cut");
        }
    }
}
