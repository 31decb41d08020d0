//! W3C trace context through every hop, so one checkout is one trace.
//!
//! Spans are `tracing` spans; the OpenTelemetry layer installed by
//! [`crate::telemetry`] gives each an OpenTelemetry context. This module is
//! where that context crosses a process boundary, as the two W3C headers in a
//! [`Carrier`]:
//!
//! - a gRPC server span ([`TraceLayer`]) continues the caller's
//!   `traceparent` metadata (or starts a trace); a call to another service
//!   sends the current span's ([`crate::upstream::Balanced`]);
//! - an outbox row stores the carrier of the span that staged it; the relay's
//!   publish span continues it and sends its own with the event; the
//!   consumer's span continues that.
//!
//! Every such span records its `trace_id` field, so its log lines carry it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The W3C headers naming a span: what a call or an event carries to the
/// next hop and what an outbox row stores until the relay sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carrier {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Carrier {
    /// The headers naming `span`, for the hop it causes. Empty when `span`
    /// is in no trace (no telemetry installed).
    pub fn of(span: &Span) -> Self {
        let mut carrier = Self::default();
        TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
        carrier
    }

    /// The headers naming the span the caller is in.
    pub fn current() -> Self {
        Self::of(&Span::current())
    }

    /// The remote parent these headers name: an empty context (a new trace
    /// starts) when they are absent or not valid W3C headers, rather than a
    /// bad one spreading.
    pub fn parent(&self) -> opentelemetry::Context {
        TraceContextPropagator::new().extract(self)
    }

    /// The trace context of a call's metadata.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let get = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Self {
            traceparent: get(TRACEPARENT),
            tracestate: get(TRACESTATE),
        }
    }

    /// Puts these headers on a call in place of any it had. An empty carrier
    /// changes nothing.
    pub fn insert_into(&self, headers: &mut http::HeaderMap) {
        let Some(traceparent) = self
            .traceparent
            .as_deref()
            .and_then(|v| http::HeaderValue::from_str(v).ok())
        else {
            return;
        };
        headers.insert(TRACEPARENT, traceparent);
        match self
            .tracestate
            .as_deref()
            .and_then(|v| http::HeaderValue::from_str(v).ok())
        {
            Some(state) => headers.insert(TRACESTATE, state),
            None => headers.remove(TRACESTATE),
        };
    }
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value).filter(|v| !v.is_empty()),
            _ => {}
        }
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// Makes `span` (just created, with an empty `trace_id` field) a child of
/// the remote span `parent` names, or a new trace's root, and records its
/// trace id for the logs.
pub fn continue_trace(span: &Span, parent: &Carrier) {
    // Only fails when the span is disabled or there is no telemetry: then
    // there is nothing to continue.
    let _ = span.set_parent(parent.parent());
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id.as_str());
    }
}

/// The trace id of `span`, when it is in one.
pub fn trace_id(span: &Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// A tower layer for gRPC servers: each call runs in a server span named
/// for its method (`shop.order.v1.OrderService/PlaceOrder`) that continues
/// the caller's trace or starts one.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TraceService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/');
        let span = tracing::info_span!(
            "grpc",
            otel.name = method,
            otel.kind = "server",
            rpc.system = "grpc",
            trace_id = Empty,
        );
        continue_trace(&span, &Carrier::from_headers(request.headers()));
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(tracing::Instrument::instrument(future, span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().expect("header value")))
            .collect()
    }

    #[test]
    fn a_valid_traceparent_names_the_parent_and_garbage_names_none() {
        let parent = Carrier::from_headers(&headers(&[(TRACEPARENT, CALLER), (TRACESTATE, "shop=1")])).parent();
        let span = parent.span();
        let context = span.span_context();
        assert!(context.is_remote());
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.trace_state().header(), "shop=1");
        for bad in [
            "",
            "00-0-0-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let carrier = Carrier {
                traceparent: Some(bad.into()),
                tracestate: None,
            };
            assert!(!carrier.parent().span().span_context().is_valid(), "{bad:?}");
        }
    }

    #[test]
    fn inserting_replaces_the_callers_headers_and_an_empty_carrier_changes_nothing() {
        let mut call = headers(&[(TRACEPARENT, CALLER), (TRACESTATE, "theirs=1")]);
        Carrier::default().insert_into(&mut call);
        assert_eq!(call[TRACEPARENT], CALLER);
        let ours = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
        Carrier {
            traceparent: Some(ours.into()),
            tracestate: None,
        }
        .insert_into(&mut call);
        assert_eq!(call[TRACEPARENT], ours);
        assert!(
            call.get(TRACESTATE).is_none(),
            "a state is only sent with the parent it belongs to"
        );
    }
}
