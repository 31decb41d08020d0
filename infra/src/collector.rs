//! A small OTLP/gRPC trace collector: what the services export their spans
//! to in tests and under `cargo xtask up --observe`, where no Jaeger runs.
//!
//! It keeps every span it receives in memory and, when given a file,
//! appends each as a JSON line, so `cargo xtask trace <order id>` can read a
//! checkout's trace after the fact. [`Trace`] puts one trace's spans in tree
//! order and draws them as a waterfall.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::span::SpanKind,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// One received span, flattened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSpan {
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a trace's root.
    pub parent_span_id: Option<String>,
    /// The exporting process's `service.name`.
    pub service: String,
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: BTreeMap<String, String>,
}

impl StoredSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    fn duration_nanos(&self) -> u64 {
        self.end_unix_nanos.saturating_sub(self.start_unix_nanos)
    }
}

type Received = Arc<Mutex<Vec<StoredSpan>>>;

/// A running collector; stops when dropped.
#[derive(Debug)]
pub struct Collector {
    addr: SocketAddr,
    received: Received,
    stop: CancellationToken,
}

impl Collector {
    /// Listens on a free port of 127.0.0.1, keeping spans in memory only.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), None).await
    }

    /// Listens on `addr`; appends every span to `file` too, when given.
    pub async fn start_on(addr: SocketAddr, file: Option<PathBuf>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("the trace collector cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let file = match file {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let opened = std::fs::OpenOptions::new().create(true).append(true).open(&path);
                Some(Mutex::new(
                    opened.with_context(|| format!("opening {}", path.display()))?,
                ))
            }
            None => None,
        };
        let received = Received::default();
        let stop = CancellationToken::new();
        let service = Receiver {
            received: received.clone(),
            file: Arc::new(file),
        };
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let stopped = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service))
                .serve_with_incoming_shutdown(incoming, stopped)
                .await;
            if let Err(e) = served {
                eprintln!("trace collector stopped: {e}");
            }
        });
        Ok(Self { addr, received, stop })
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` should say.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<StoredSpan> {
        self.received.lock().map(|spans| spans.clone()).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Receiver {
    received: Received,
    file: Arc<Option<Mutex<std::fs::File>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = flatten(request.into_inner());
        if let Some(file) = self.file.as_ref() {
            let mut lines = String::new();
            for span in &spans {
                let line = serde_json::to_string(span).map_err(|e| tonic::Status::internal(e.to_string()))?;
                lines.push_str(&line);
                lines.push('\n');
            }
            let mut file = file.lock().map_err(|_| tonic::Status::internal("span file poisoned"))?;
            file.write_all(lines.as_bytes())
                .map_err(|e| tonic::Status::unavailable(format!("cannot store spans: {e}")))?;
        }
        if let Ok(mut received) = self.received.lock() {
            received.extend(spans);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<StoredSpan> {
    let mut flat = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                let kind = match SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified) {
                    SpanKind::Server => "server",
                    SpanKind::Client => "client",
                    SpanKind::Producer => "producer",
                    SpanKind::Consumer => "consumer",
                    SpanKind::Internal | SpanKind::Unspecified => "internal",
                };
                flat.push(StoredSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
                    service: service.clone(),
                    name: span.name,
                    kind: kind.to_owned(),
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano,
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    flat
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|pair| (pair.key.clone(), pair.value.as_ref().map(text).unwrap_or_default()))
        .collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Every span stored in a collector's file.
pub fn read_spans(path: &Path) -> anyhow::Result<Vec<StoredSpan>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(n, line)| serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1)))
        .collect()
}

/// One trace's spans, each after its parent, siblings by start time.
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: String,
    /// `(depth, span)` in tree order.
    pub spans: Vec<(usize, StoredSpan)>,
    /// Spans whose parent was not received (a trace begun elsewhere, or
    /// spans dropped on the way), drawn as roots.
    pub roots: usize,
}

impl Trace {
    /// The trace `trace_id` among `spans`.
    pub fn of(trace_id: &str, spans: &[StoredSpan]) -> Self {
        let mine: Vec<&StoredSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
        let ids: std::collections::HashSet<&str> = mine.iter().map(|s| s.span_id.as_str()).collect();
        let mut children: HashMap<Option<&str>, Vec<&StoredSpan>> = HashMap::new();
        for span in &mine {
            let parent = span.parent_span_id.as_deref().filter(|p| ids.contains(p));
            children.entry(parent).or_default().push(span);
        }
        for siblings in children.values_mut() {
            siblings.sort_by_key(|s| (s.start_unix_nanos, s.span_id.clone()));
        }
        let roots = children.get(&None).map_or(0, Vec::len);
        let mut ordered = Vec::with_capacity(mine.len());
        let mut stack: Vec<(usize, &StoredSpan)> = children
            .get(&None)
            .into_iter()
            .flatten()
            .rev()
            .map(|s| (0, *s))
            .collect();
        while let Some((depth, span)) = stack.pop() {
            ordered.push((depth, span.clone()));
            if let Some(kids) = children.get(&Some(span.span_id.as_str())) {
                stack.extend(kids.iter().rev().map(|k| (depth + 1, *k)));
            }
        }
        Self {
            trace_id: trace_id.to_owned(),
            spans: ordered,
            roots,
        }
    }

    /// The traces in which some span has `key` = `value` (an order's spans
    /// carry `order_id`), oldest first.
    pub fn with_attribute(key: &str, value: &str, spans: &[StoredSpan]) -> Vec<Self> {
        let mut ids: Vec<(u64, &str)> = Vec::new();
        for span in spans.iter().filter(|s| s.attribute(key) == Some(value)) {
            match ids.iter_mut().find(|(_, id)| *id == span.trace_id) {
                Some((start, _)) => *start = (*start).min(span.start_unix_nanos),
                None => ids.push((span.start_unix_nanos, &span.trace_id)),
            }
        }
        ids.sort();
        ids.into_iter().map(|(_, id)| Self::of(id, spans)).collect()
    }

    /// The services that took part, each once, in order of appearance.
    pub fn services(&self) -> Vec<&str> {
        let mut seen = Vec::new();
        for (_, span) in &self.spans {
            if !seen.contains(&span.service.as_str()) {
                seen.push(span.service.as_str());
            }
        }
        seen
    }

    /// The trace as a terminal waterfall: start offset, duration, service,
    /// the span indented under its parent, and a bar on the trace's time.
    pub fn waterfall(&self) -> String {
        const BAR: usize = 40;
        let start = self.spans.iter().map(|(_, s)| s.start_unix_nanos).min().unwrap_or(0);
        let end = self.spans.iter().map(|(_, s)| s.end_unix_nanos).max().unwrap_or(start);
        let total = end.saturating_sub(start).max(1);
        let ms = |nanos: u64| nanos as f64 / 1e6;
        let mut out = format!(
            "trace {}: {} spans, {} service(s), {:.1} ms\n{:>10} {:>10}  {:<14} {:<58} {}\n",
            self.trace_id,
            self.spans.len(),
            self.services().len(),
            ms(total),
            "start",
            "duration",
            "service",
            "span",
            "timeline",
        );
        for (depth, span) in &self.spans {
            let offset = span.start_unix_nanos.saturating_sub(start);
            let from = (offset as u128 * BAR as u128 / total as u128) as usize;
            let width = ((span.duration_nanos() as u128 * BAR as u128 / total as u128) as usize).max(1);
            let bar = format!(
                "{}{}",
                " ".repeat(from.min(BAR)),
                "█".repeat(width.min(BAR - from.min(BAR - 1)))
            );
            let label = format!("{}{}", "  ".repeat(*depth), span.name);
            let _ = writeln!(
                out,
                "{:>7.1} ms {:>7.1} ms  {:<14} {:<58} |{:<BAR$}|",
                ms(offset),
                ms(span.duration_nanos()),
                span.service,
                label,
                bar,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, service: &str, start_ms: u64, end_ms: u64) -> StoredSpan {
        StoredSpan {
            trace_id: "t1".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_owned),
            service: service.into(),
            name: format!("{service} {id}"),
            kind: "internal".into(),
            start_unix_nanos: start_ms * 1_000_000,
            end_unix_nanos: end_ms * 1_000_000,
            attributes: BTreeMap::from([("order_id".to_owned(), "o-1".to_owned())]),
        }
    }

    #[test]
    fn a_trace_is_drawn_in_tree_order_with_children_under_their_parent() {
        let spans = vec![
            span("c", Some("a"), "svc-order", 30, 40),
            span("a", None, "svc-gateway", 0, 100),
            span("b", Some("a"), "svc-cart", 10, 20),
            span("d", Some("b"), "svc-cart", 12, 18),
        ];
        let trace = Trace::of("t1", &spans);
        let order: Vec<(usize, &str)> = trace.spans.iter().map(|(d, s)| (*d, s.span_id.as_str())).collect();
        assert_eq!(order, [(0, "a"), (1, "b"), (2, "d"), (1, "c")]);
        assert_eq!(trace.roots, 1);
        assert_eq!(trace.services(), ["svc-gateway", "svc-cart", "svc-order"]);
        let drawn = trace.waterfall();
        assert!(drawn.contains("4 spans, 3 service(s), 100.0 ms"), "{drawn}");
        assert!(
            drawn.contains("    svc-cart d"),
            "the grandchild is indented twice: {drawn}"
        );
        assert_eq!(Trace::with_attribute("order_id", "o-1", &spans).len(), 1);
    }

    #[tokio::test]
    async fn spans_are_received_and_stored_as_json_lines() -> anyhow::Result<()> {
        use opentelemetry_proto::tonic::{
            collector::trace::v1::trace_service_client::TraceServiceClient,
            resource::v1::Resource,
            trace::v1::{ResourceSpans, ScopeSpans, Span},
        };
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("traces/spans.jsonl");
        let collector = Collector::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), Some(file.clone())).await?;
        let service_name = KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue("svc-order".into())),
            }),
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![service_name],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01; 8],
                        name: "shop.order.v1.OrderService/PlaceOrder".into(),
                        kind: SpanKind::Server as i32,
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 2,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        TraceServiceClient::connect(collector.endpoint())
            .await?
            .export(request)
            .await?;
        let stored = read_spans(&file)?;
        assert_eq!(stored, collector.spans());
        assert_eq!(stored[0].service, "svc-order");
        assert_eq!(stored[0].kind, "server");
        assert_eq!(stored[0].trace_id, "ab".repeat(16));
        assert_eq!(stored[0].parent_span_id, None);
        Ok(())
    }
}
