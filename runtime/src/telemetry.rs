//! Logs and spans.
//!
//! Every service process has one `tracing` subscriber: an `EnvFilter`
//! (`RUST_LOG`), the log lines (JSON or text, see [`LogFormat`]) and the
//! OpenTelemetry layer, which gives each span a trace context that
//! [`crate::trace`] carries across processes. With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, finished spans are exported over
//! OTLP/gRPC from a bounded queue on a thread of their own: a collector that
//! is down or slow costs dropped spans (counted in
//! [`series::TRACE_SPANS_DROPPED`]), never a slower or failed request.

use std::{
    fmt,
    sync::atomic::{AtomicBool, Ordering},
    thread::JoinHandle,
    time::Duration,
};

use futures::FutureExt as _;
use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{EnvFilter, fmt as logs, prelude::*};

use crate::{
    config::{EnvReader, LogFormat},
    registry::ServiceSpec,
    series,
};

/// How spans leave the process.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: an OTLP/gRPC collector
    /// (`http://127.0.0.1:4317`). Unset: spans are not exported, though
    /// trace ids are still carried and logged.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_TRACES_SAMPLER_ARG`: the share of new traces recorded, 0 to 1
    /// (default 1). A trace continued from a caller keeps the caller's
    /// decision, so one checkout is recorded whole or not at all.
    pub sample_ratio: f64,
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: 1.0,
        }
    }
}

impl TracingSettings {
    pub fn read(env: &mut EnvReader) -> Self {
        let otlp_endpoint: Option<String> = env.optional("OTEL_EXPORTER_OTLP_ENDPOINT", "e.g. http://127.0.0.1:4317");
        if let Some(endpoint) = &otlp_endpoint
            && !(endpoint.starts_with("http://") && endpoint.parse::<http::Uri>().is_ok())
        {
            env.problem(format!(
                "OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?} is not an http:// URL of an OTLP/gRPC collector \
                 (e.g. http://127.0.0.1:4317)"
            ));
        }
        let sample_ratio = env.or("OTEL_TRACES_SAMPLER_ARG", 1.0, "a ratio from 0 to 1");
        if !(0.0..=1.0).contains(&sample_ratio) {
            env.problem(format!("OTEL_TRACES_SAMPLER_ARG={sample_ratio} must be from 0 to 1"));
        }
        Self {
            otlp_endpoint,
            sample_ratio,
        }
    }
}

/// The installed telemetry of a process; [`shutdown`](Self::shutdown)
/// sends the spans still queued.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports what is queued (for up to [`EXPORT_TIMEOUT`]), then stops.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// Installs the process's subscriber (`RUST_LOG`, default `info`) with log
/// lines in `format` (none without one: benchmarks) and spans of `service`.
/// Only the first call in a process installs anything (tests run many
/// services in one process).
pub fn init(format: Option<LogFormat>, service: &ServiceSpec, tracing: &TracingSettings) -> Telemetry {
    let resource = Resource::builder()
        .with_service_name(service.name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            tracing.sample_ratio,
        ))))
        .with_resource(resource.clone());
    if let Some(endpoint) = &tracing.otlp_endpoint {
        provider = provider.with_span_processor(ExportQueue::start(endpoint.clone(), resource, QUEUE_CAPACITY));
    }
    let provider = provider.build();
    // JSON lines carry the fields of every span they are in (the request's
    // or the event's `trace_id`, its `order_id`), flattened, so a log
    // pipeline can search by them.
    let format = format.map(LogFormat::resolve);
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(spans(&provider, service))
        .with(
            (format == Some(LogFormat::Json))
                .then(|| logs::layer().json().with_current_span(true).with_span_list(true)),
        )
        .with((format == Some(LogFormat::Text)).then(|| logs::layer().with_target(false)))
        .try_init();
    Telemetry { provider }
}

/// Spans without log lines or export, when nothing was installed: a
/// service started in a test still carries trace context from hop to hop.
pub(crate) fn ensure_installed(service: &ServiceSpec) {
    if !tracing::dispatcher::has_been_set() {
        // The layer's tracer keeps the provider.
        let _ = init(None, service, &TracingSettings::default());
    }
}

/// The OpenTelemetry layer.
fn spans<S>(provider: &SdkTracerProvider, service: &ServiceSpec) -> impl tracing_subscriber::Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(service.name))
}

/// `RUST_LOG`, by default `info` with the chatty libraries quieter. One
/// filter for logs and spans alike: a per-layer filter on the span layer
/// intermittently left spans without trace context under concurrent
/// requests. The services' spans are at `info`, so a `RUST_LOG` quieter
/// than that for `shop_runtime` leaves traces without them.
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(QUIET_LIBRARIES))
}

const QUIET_LIBRARIES: &str = "info,sqlx=warn,async_nats=warn,h2=warn,tower=warn";

/// Spans waiting for export; beyond this they are dropped and counted.
pub const QUEUE_CAPACITY: usize = 4096;
/// Spans in one export call.
const BATCH_SIZE: usize = 512;
/// How often the queue is sent: spans reach the collector within this.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// The longest one export call may take before its spans count as dropped.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// A span processor with a bounded queue and one exporting thread. The
/// SDK's batch processor drops silently when full; this one counts every
/// span it could not deliver, by why.
struct ExportQueue {
    queue: mpsc::Sender<SpanData>,
    stop: CancellationToken,
    worker: std::sync::Mutex<Option<JoinHandle<()>>>,
    stopped: AtomicBool,
}

impl fmt::Debug for ExportQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportQueue")
            .field("queued", &(self.queue.max_capacity() - self.queue.capacity()))
            .finish_non_exhaustive()
    }
}

impl ExportQueue {
    fn start(endpoint: String, resource: Resource, capacity: usize) -> Self {
        let (queue, spans) = mpsc::channel(capacity);
        let stop = CancellationToken::new();
        let worker = std::thread::Builder::new()
            .name("span-export".into())
            .spawn({
                let stop = stop.clone();
                move || export_loop(endpoint, resource, spans, stop)
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the span exporter; spans will be dropped"))
            .ok();
        Self {
            queue,
            stop,
            worker: std::sync::Mutex::new(worker),
            stopped: AtomicBool::new(false),
        }
    }
}

fn dropped(reason: &'static str, spans: usize) {
    metrics::counter!(series::TRACE_SPANS_DROPPED, "reason" => reason).increment(spans as u64);
}

impl SpanProcessor for ExportQueue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            dropped("queue_full", 1);
        }
    }

    /// Spans are sent every [`BATCH_DELAY`]; nothing waits on a flush.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.stop.cancel();
        let worker = self.worker.lock().map(|mut w| w.take()).unwrap_or_default();
        let Some(worker) = worker else { return Ok(()) };
        let deadline = std::time::Instant::now() + timeout.min(EXPORT_TIMEOUT);
        while !worker.is_finished() {
            if std::time::Instant::now() > deadline {
                return Err(OTelSdkError::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = worker.join();
        Ok(())
    }
}

/// Sends the queue every [`BATCH_DELAY`] until stopped, then once more.
fn export_loop(endpoint: String, resource: Resource, mut spans: mpsc::Receiver<SpanData>, stop: CancellationToken) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the span exporter; spans will be dropped");
            return;
        }
    };
    runtime.block_on(async move {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build();
        let mut exporter = match exporter {
            Ok(exporter) => exporter,
            Err(e) => {
                tracing::error!(%endpoint, error = %e, "cannot export spans; they will be dropped");
                return;
            }
        };
        exporter.set_resource(&resource);
        let mut failing = false;
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tokio::time::sleep(BATCH_DELAY) => false,
            };
            let mut batch = Vec::with_capacity(BATCH_SIZE);
            while spans.recv_many(&mut batch, BATCH_SIZE).now_or_never().is_some_and(|n| n > 0) {
                let count = batch.len();
                let sent = tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(std::mem::take(&mut batch))).await;
                match sent {
                    Ok(Ok(())) => {
                        metrics::counter!(series::TRACE_SPANS_EXPORTED).increment(count as u64);
                        if std::mem::replace(&mut failing, false) {
                            tracing::info!(%endpoint, "exporting spans again");
                        }
                    }
                    Ok(Err(e)) => {
                        dropped("export_failed", count);
                        // Once per outage, not once per batch.
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(%endpoint, error = %e, "span export failed; spans are dropped until it works");
                        }
                    }
                    Err(_) => {
                        dropped("export_failed", count);
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(%endpoint, timeout = ?EXPORT_TIMEOUT, "span export timed out; spans are dropped until it works");
                        }
                    }
                }
                batch = Vec::with_capacity(BATCH_SIZE);
            }
            if stopping {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Carrier, continue_trace, trace_id};

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn subscriber(provider: &SdkTracerProvider) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
    }

    #[test]
    fn a_span_continues_its_callers_trace_and_names_itself_to_the_next_hop() {
        let provider = SdkTracerProvider::builder().build();
        tracing::subscriber::with_default(subscriber(&provider), || {
            let caller = Carrier {
                traceparent: Some(CALLER.into()),
                tracestate: None,
            };
            let span = tracing::info_span!("grpc", trace_id = tracing::field::Empty);
            continue_trace(&span, &caller);
            assert_eq!(trace_id(&span).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
            let next = Carrier::of(&span).traceparent.expect("a traceparent");
            assert!(next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{next}");
            assert_ne!(next, CALLER, "the next hop's parent is this span, not the caller");

            let root = tracing::info_span!("event", trace_id = tracing::field::Empty);
            continue_trace(&root, &Carrier::default());
            let id = trace_id(&root).expect("a new trace");
            assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        });
    }

    #[test]
    fn a_caller_that_did_not_sample_is_followed() {
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .build();
        tracing::subscriber::with_default(subscriber(&provider), || {
            let unsampled = Carrier {
                traceparent: Some(CALLER.replace("-01", "-00")),
                tracestate: None,
            };
            let span = tracing::info_span!("grpc", trace_id = tracing::field::Empty);
            continue_trace(&span, &unsampled);
            let next = Carrier::of(&span).traceparent.expect("a traceparent");
            assert!(next.ends_with("-00"), "not sampled downstream either: {next}");
        });
    }

    #[test]
    fn settings_are_checked() {
        let mut env = EnvReader::from_map([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ]);
        let _ = TracingSettings::read(&mut env);
        let problems = env.finish().expect_err("both are wrong").problems;
        assert_eq!(problems.len(), 2, "{problems:?}");
        let mut env = EnvReader::from_map([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]);
        assert_eq!(
            TracingSettings::read(&mut env),
            TracingSettings {
                otlp_endpoint: Some("http://127.0.0.1:4317".into()),
                sample_ratio: 0.25
            }
        );
        assert_eq!(
            TracingSettings::read(&mut EnvReader::from_map::<&str, &str>([])),
            TracingSettings::default()
        );
    }

    /// A full queue drops and counts, and never blocks the span's thread.
    #[test]
    fn a_full_queue_drops_spans_and_counts_them() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            // A collector nobody listens on: the worker's first export
            // waits out its connection attempt while the queue fills.
            let queue = ExportQueue::start("http://127.0.0.1:9".into(), Resource::builder_empty().build(), 2);
            let provider = SdkTracerProvider::builder().with_span_processor(queue).build();
            tracing::subscriber::with_default(subscriber(&provider), || {
                for _ in 0..10 {
                    tracing::info_span!("work").in_scope(|| {});
                }
            });
            let dropped = handle.render();
            let line = dropped
                .lines()
                .find(|l| l.starts_with(series::TRACE_SPANS_DROPPED) && l.contains("queue_full"))
                .unwrap_or_else(|| panic!("no queue_full drops in {dropped}"));
            let count: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a count");
            assert!(count >= 8.0, "{line}");
            let _ = provider.shutdown();
        });
    }
}
