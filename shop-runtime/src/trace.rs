//! W3C trace context (`traceparent`) carried from a request through every
//! event of the saga, so one checkout is one trace: the gRPC server takes it
//! from the caller's metadata (or starts one), consumers take it from the
//! event's headers, and every event staged in the outbox carries a child of
//! the current context. Logs record the trace id.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use uuid::Uuid;

/// A `traceparent`: version 00, trace id, parent span id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A new trace (sampled).
    pub fn root() -> Self {
        Self {
            trace_id: Uuid::new_v4().as_u128(),
            span_id: new_span_id(),
            flags: 1,
        }
    }

    /// The same trace, a new span under this one.
    pub fn child(self) -> Self {
        Self {
            span_id: new_span_id(),
            ..self
        }
    }

    /// Parses a `traceparent` header; `None` when it is not one (then a new
    /// trace starts rather than a bad one spreading).
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        Some(Self {
            trace_id,
            span_id,
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }

    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The context the current task runs in, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|c| *c).ok()
    }

    /// Runs `work` with `self` as the current context.
    pub fn scope<F: Future>(self, work: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, work)
    }
}

fn new_span_id() -> u64 {
    // The low half of a random UUID; zero is not a valid span id.
    (Uuid::new_v4().as_u128() as u64).max(1)
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

/// A tower layer for gRPC servers: each request runs in the caller's trace
/// context (its `traceparent` metadata) or a new one, inside a span that
/// logs the trace id.
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
        let context = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse)
            .map_or_else(TraceContext::root, TraceContext::child);
        let span = tracing::info_span!("grpc", path = %request.uri().path(), trace_id = %context.trace_id());
        let future = self.inner.call(request);
        Box::pin(tracing::Instrument::instrument(context.scope(future), span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let raw = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(raw).expect("valid");
        assert_eq!(parsed.to_string(), raw);
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = parsed.child();
        assert_eq!(child.trace_id(), parsed.trace_id());
        assert_ne!(child.to_string(), raw);
        for bad in [
            "",
            "00-0-0-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_current_context_is_scoped_to_the_task() {
        assert_eq!(TraceContext::current(), None);
        let root = TraceContext::root();
        let seen = root.scope(async { TraceContext::current() }).await;
        assert_eq!(seen, Some(root));
    }
}
