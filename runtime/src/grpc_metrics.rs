//! RED metrics of every gRPC call a service answers, under the names
//! Grafana's gRPC dashboards expect: the counter
//! [`GRPC_HANDLED`](crate::series::GRPC_HANDLED)
//! `{grpc_service, grpc_method, grpc_code}` and the histogram
//! [`GRPC_HANDLING_SECONDS`](crate::series::GRPC_HANDLING_SECONDS)
//! `{grpc_service, grpc_method}` (a server stream counts until it ends).
//!
//! Label values stay bounded whatever clients send: a path outside the
//! services served, or a method the service does not have, is `unknown`.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use tonic::Code;

use crate::series::{GRPC_HANDLED as HANDLED, GRPC_HANDLING_SECONDS as HANDLING_SECONDS};

/// Records the call metrics for the services in `known`.
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    known: Arc<[String]>,
}

impl GrpcMetricsLayer {
    /// `services`: the full names served, e.g. `shop.order.v1.OrderService`.
    pub fn new<S: Into<String>>(services: impl IntoIterator<Item = S>) -> Self {
        Self {
            known: services.into_iter().map(Into::into).collect(),
        }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            known: self.known.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    known: Arc<[String]>,
}

/// One call being answered.
#[derive(Debug)]
struct Call {
    service: String,
    method: String,
    started: Instant,
}

impl Call {
    fn of(path: &str, known: &[String]) -> Self {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .filter(|(service, method)| !method.is_empty() && known.iter().any(|k| k == service))
            .unwrap_or(("unknown", "unknown"));
        Self {
            service: service.to_owned(),
            method: method.to_owned(),
            started: Instant::now(),
        }
    }

    fn finish(self, code: Code) {
        // A method the service does not have: the name is the client's.
        let method = if code == Code::Unimplemented {
            "unknown".to_owned()
        } else {
            self.method
        };
        let labels = [("grpc_service", self.service), ("grpc_method", method)];
        metrics::histogram!(HANDLING_SECONDS, &labels).record(self.started.elapsed().as_secs_f64());
        let [service, method] = labels;
        metrics::counter!(HANDLED, &[service, method, ("grpc_code", code_name(code).to_owned())]).increment(1);
    }
}

/// The code as gRPC's own implementations spell it (`OK`, `NotFound`, …).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    let raw = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(raw))
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = Call::of(request.uri().path(), &self.known);
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = match future.await {
                Ok(response) => response,
                Err(error) => {
                    call.finish(Code::Internal);
                    return Err(error);
                }
            };
            // Trailers-only (an error, mostly): the status is in the headers.
            let call = match status_of(response.headers()) {
                Some(code) => {
                    call.finish(code);
                    None
                }
                None => Some(call),
            };
            Ok(response.map(|inner| MeteredBody { inner, call }))
        })
    }
}

/// The response body, recording the call when its trailers pass (or when
/// it ends or is dropped without any: the client went away).
#[derive(Debug)]
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(Code::Cancelled);
        }
    }
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of)
                    && let Some(call) = self.call.take()
                {
                    call.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    call.finish(Code::Internal);
                }
            }
            Poll::Ready(None) => {
                // Ended without a status: what gRPC clients read as Unknown.
                if let Some(call) = self.call.take() {
                    call.finish(Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_served_services_are_one_bounded_label() {
        let known: Vec<String> = vec!["shop.order.v1.OrderService".into()];
        let call = Call::of("/shop.order.v1.OrderService/GetOrder", &known);
        assert_eq!(
            (call.service.as_str(), call.method.as_str()),
            ("shop.order.v1.OrderService", "GetOrder")
        );
        for path in [
            "/evil.Service/Anything",
            "/",
            "/shop.order.v1.OrderService/",
            "nonsense",
        ] {
            let call = Call::of(path, &known);
            assert_eq!(
                (call.service.as_str(), call.method.as_str()),
                ("unknown", "unknown"),
                "{path}"
            );
        }
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Cancelled), "Canceled");
    }
}
