//! The replicas of the services a process calls, and how each call picks one.
//!
//! An upstream is what one URL setting names for a service: one URL or
//! several, comma-separated ([`Replicas`]). Its endpoints are the addresses
//! those names resolve to, found again every `UPSTREAM_RESOLVE_INTERVAL`
//! ([`resolve_periodically`]), so replicas that start or stop behind a
//! headless Service are picked up. Each endpoint has its own HTTP/2 channel,
//! its own circuit breaker and its own health: a gRPC `Health/Watch` stream,
//! so a replica that starts draining (NOT_SERVING at SIGTERM) or dies (the
//! stream breaks) gets no new call from the next one on. Calls go round the
//! serving endpoints in turn ([`Upstream::candidates`]).
//!
//! The gateway forwards through the endpoints itself; the services call
//! through a [`Balanced`] channel. Both move a unary call on to the next
//! endpoint when it provably never reached the one tried ([`never_reached`]):
//! a refused connection or stream did nothing there, so trying elsewhere
//! cannot do anything twice. A call that reached a replica is never sent
//! again.

use std::{
    error::Error as StdError,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, OnceLock, RwLock, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use tokio_util::sync::CancellationToken;
use tonic::{Status, body::Body, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response, health_client::HealthClient};
use tower::ServiceExt;

use crate::{
    breaker::{BreakerSettings, CircuitBreaker, Outcome},
    config::EnvReader,
    registry::ServiceSpec,
};

type BoxError = Box<dyn StdError + Send + Sync>;

/// One URL of an upstream: plain HTTP/2 to `host` (a name or an address)
/// at `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|_| "is not a URL".to_owned())?;
        if uri.scheme_str() != Some("http") {
            return Err("must be http:// (the services speak plaintext HTTP/2 inside the deployment)".into());
        }
        let host = uri.host().ok_or("has no host")?;
        Ok(Self {
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port: uri.port_u16().unwrap_or(80),
        })
    }
}

/// Where the replicas of a service are, as one URL setting names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicas {
    /// The setting as given, for logs.
    pub urls: String,
    pub targets: Vec<Target>,
}

impl Replicas {
    /// One replica on each of `ports` of this machine.
    pub fn loopback(ports: &[u16]) -> Self {
        Self {
            urls: ports
                .iter()
                .map(|port| format!("http://127.0.0.1:{port}"))
                .collect::<Vec<_>>()
                .join(","),
            targets: ports
                .iter()
                .map(|&port| Target {
                    host: "127.0.0.1".into(),
                    port,
                })
                .collect(),
        }
    }

    /// `var` (one of `service`'s `url_vars`): one URL or several,
    /// comma-separated; by default where the service listens on this
    /// machine.
    pub fn read(env: &mut EnvReader, service: &ServiceSpec, var: &str) -> Self {
        debug_assert!(service.url_vars.contains(&var), "{var} does not name {}", service.name);
        let urls: String = env.or(
            var,
            service.default_url(),
            "e.g. http://svc-order:50051, or several, comma-separated",
        );
        let mut targets = Vec::new();
        for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            match Target::parse(url) {
                Ok(target) => targets.push(target),
                Err(why) => env.problem(format!("{var}: {url:?} {why}")),
            }
        }
        if targets.is_empty() {
            env.problem(format!("{var} names no URL"));
        }
        Self { urls, targets }
    }
}

/// How a process reaches the replicas of what it calls: the same settings
/// in the gateway and in every service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReachSettings {
    /// `UPSTREAM_CONNECT_TIMEOUT`: how long dialling a replica may take
    /// (default 250ms), so an unreachable one fails fast.
    pub connect_timeout: Duration,
    /// One breaker per replica.
    pub breaker: BreakerSettings,
    /// `UPSTREAM_HEALTH_INTERVAL`: how soon a replica whose health stream
    /// ended is asked again (default 5s).
    pub health_interval: Duration,
    /// `UPSTREAM_RESOLVE_INTERVAL`: how often host names are resolved
    /// again, to find replicas that came or went (default 5s).
    pub resolve_interval: Duration,
}

impl Default for ReachSettings {
    /// The defaults of [`read`](Self::read).
    fn default() -> Self {
        Self::read(&mut EnvReader::from_map(Vec::<(String, String)>::new()))
    }
}

impl ReachSettings {
    pub fn read(env: &mut EnvReader) -> Self {
        Self {
            connect_timeout: env.positive_duration("UPSTREAM_CONNECT_TIMEOUT", Duration::from_millis(250)),
            breaker: BreakerSettings::read(env),
            health_interval: env.positive_duration("UPSTREAM_HEALTH_INTERVAL", Duration::from_secs(5)),
            resolve_interval: env.positive_duration("UPSTREAM_RESOLVE_INTERVAL", Duration::from_secs(5)),
        }
    }
}

/// How a service calls another: the same settings in every caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// `UPSTREAM_TIMEOUT`: the deadline of one call (default 2s).
    pub timeout: Duration,
    pub reach: ReachSettings,
}

impl UpstreamSettings {
    pub fn read(env: &mut EnvReader) -> Self {
        Self {
            timeout: env.positive_duration("UPSTREAM_TIMEOUT", Duration::from_secs(2)),
            reach: ReachSettings::read(env),
        }
    }

    /// A channel to the replicas of `upstream` (see [`Balanced`]), whose
    /// names are resolved again until `shutdown`.
    pub fn balanced(&self, upstream: &'static str, replicas: &Replicas, shutdown: CancellationToken) -> Balanced {
        let upstream = Upstream::new(upstream, replicas, self.reach, Some(self.timeout));
        tokio::spawn(resolve_periodically(
            vec![upstream.clone()],
            self.reach.resolve_interval,
            shutdown,
        ));
        Balanced { upstream }
    }
}

/// One replica of an upstream.
pub struct Endpoint {
    pub addr: SocketAddr,
    /// A lazily connecting, reconnecting, multiplexed HTTP/2 client.
    pub channel: Channel,
    pub breaker: CircuitBreaker,
    /// What its last health answer said; false until the first one.
    serving: AtomicBool,
    /// The task following its health, which ends with the endpoint.
    health: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(task) = self.health.get() {
            task.abort();
        }
    }
}

impl Endpoint {
    /// Whether it says it is serving and its calls get through: a replica
    /// whose breaker opened is not, whatever its health stream last said
    /// (a stream can outlive the server behind it).
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed) && !self.breaker.is_open()
    }
}

/// The replicas of one service, as one URL setting names them.
pub struct Upstream {
    pub name: &'static str,
    /// The URL setting, for logs.
    pub urls: String,
    targets: Vec<Target>,
    endpoints: RwLock<Arc<[Arc<Endpoint>]>>,
    turn: AtomicUsize,
    reach: ReachSettings,
    /// The deadline of each call, for callers that do not set their own.
    call_timeout: Option<Duration>,
}

impl Upstream {
    /// The upstream `name` at `replicas`, with the endpoints literal
    /// addresses give at once; names wait for [`resolve`](Self::resolve).
    /// Nothing connects until the first call or health watch.
    pub fn new(
        name: &'static str,
        replicas: &Replicas,
        reach: ReachSettings,
        call_timeout: Option<Duration>,
    ) -> Arc<Self> {
        let upstream = Arc::new(Self {
            name,
            urls: replicas.urls.clone(),
            targets: replicas.targets.clone(),
            endpoints: RwLock::new(Arc::from(Vec::new())),
            turn: AtomicUsize::new(0),
            reach,
            call_timeout,
        });
        let literal: Option<Vec<SocketAddr>> = replicas
            .targets
            .iter()
            .map(|t| t.host.parse().ok().map(|ip| SocketAddr::new(ip, t.port)))
            .collect();
        if let Some(addrs) = literal {
            upstream.set_endpoints(addrs);
        }
        upstream
    }

    /// Every endpoint, serving ones first, starting with the next one in
    /// turn. The caller takes the first whose breaker admits the call; when
    /// none says it is serving (just started, or every replica is
    /// draining), the others are still tried rather than nothing.
    pub fn candidates(&self) -> Vec<Arc<Endpoint>> {
        let (mut serving, mut other): (Vec<_>, Vec<_>) = self.endpoints().iter().cloned().partition(|e| e.is_serving());
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        for group in [&mut serving, &mut other] {
            if !group.is_empty() {
                let by = turn % group.len();
                group.rotate_left(by);
            }
        }
        serving.into_iter().chain(other).collect()
    }

    pub fn endpoints(&self) -> Arc<[Arc<Endpoint>]> {
        self.endpoints.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether some endpoint says it is serving.
    pub fn is_serving(&self) -> bool {
        self.endpoints().iter().any(|e| e.is_serving())
    }

    /// Makes `addrs` the endpoints: those already known stay as they are
    /// (connection, breaker, health), new ones are added, the rest dropped.
    fn set_endpoints(&self, mut addrs: Vec<SocketAddr>) {
        addrs.sort();
        addrs.dedup();
        let current = self.endpoints();
        if current.iter().map(|e| e.addr).eq(addrs.iter().copied()) {
            return;
        }
        let next: Vec<Arc<Endpoint>> = addrs
            .iter()
            .filter_map(|addr| match current.iter().find(|e| e.addr == *addr) {
                Some(known) => Some(known.clone()),
                None => self.endpoint(*addr),
            })
            .collect();
        tracing::info!(
            upstream = self.name,
            endpoints = ?next.iter().map(|e| e.addr).collect::<Vec<_>>(),
            "upstream endpoints changed"
        );
        *self.endpoints.write().unwrap_or_else(|e| e.into_inner()) = next.into();
    }

    fn endpoint(&self, addr: SocketAddr) -> Option<Arc<Endpoint>> {
        let channel = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
            Ok(endpoint) => {
                let mut endpoint = endpoint
                    .connect_timeout(self.reach.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10));
                if let Some(timeout) = self.call_timeout {
                    // Bounds the wait for the response's headers only, so
                    // the health watch on the same connection lives on.
                    endpoint = endpoint.timeout(timeout);
                }
                endpoint.connect_lazy()
            }
            Err(e) => {
                tracing::error!(upstream = self.name, %addr, error = %e, "cannot make a channel");
                return None;
            }
        };
        let endpoint = Arc::new(Endpoint {
            addr,
            channel,
            breaker: self.reach.breaker.breaker_for(self.name, addr.to_string()),
            serving: AtomicBool::new(false),
            health: OnceLock::new(),
        });
        // Spawned once the endpoint exists: the task holds it only weakly,
        // and a task started inside its construction could find it missing.
        let health = tokio::spawn(watch_health(
            Arc::downgrade(&endpoint),
            self.name,
            self.reach.health_interval,
        ));
        let _ = endpoint.health.set(health.abort_handle());
        Some(endpoint)
    }

    /// Resolves every target again; an answer that fails keeps what was
    /// known (a DNS hiccup must not empty the upstream).
    pub async fn resolve(&self) {
        let mut addrs = Vec::new();
        for target in &self.targets {
            match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                Ok(found) => addrs.extend(found),
                Err(e) => {
                    tracing::warn!(upstream = self.name, host = target.host, error = %e, "cannot resolve; keeping the endpoints known");
                    return;
                }
            }
        }
        self.set_endpoints(addrs);
    }

    /// Sends a unary call to the next serving endpoint whose breaker admits
    /// it, and on to the next whenever it never reached the one tried.
    async fn call(&self, request: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        let (parts, body) = request.into_parts();
        // A unary request is one message: kept whole, so that it can be
        // sent again.
        let body: Bytes = body.collect().await?.to_bytes();
        let mut tried = 0;
        let mut last = None;
        for endpoint in self.candidates() {
            let Some(permit) = endpoint.breaker.admit() else {
                continue;
            };
            tried += 1;
            let request = http::Request::from_parts(parts.clone(), Body::new(Full::new(body.clone())));
            match endpoint.channel.clone().oneshot(request).await {
                Ok(response) => {
                    // Whatever it says, a replica that answers is up (its
                    // UNAVAILABLE is about its own dependencies).
                    permit.report(Outcome::Success);
                    return Ok(response);
                }
                Err(error) => {
                    permit.report(Outcome::Failure);
                    let error: BoxError = error.into();
                    if !never_reached(&*error) {
                        return Err(error);
                    }
                    tracing::debug!(upstream = self.name, endpoint = %endpoint.addr, error = %error, "the call never reached this replica; trying the next");
                    last = Some(error.to_string());
                }
            }
        }
        Err(Box::new(
            Status::unavailable(format!("{} is unreachable", self.name)).with_source(Unsent {
                upstream: self.name,
                tried,
                last,
            }),
        ))
    }
}

/// No replica took a call: none known, every breaker open, or every one
/// tried refused it. Nothing was done anywhere.
#[derive(Debug, thiserror::Error)]
#[error("no replica of {upstream} took the call ({tried} tried{})", last.as_ref().map(|e| format!("; last: {e}")).unwrap_or_default())]
pub struct Unsent {
    pub upstream: &'static str,
    pub tried: usize,
    pub last: Option<String>,
}

/// Whether `status` says the call reached no replica (see [`Unsent`]), so
/// nothing was done and the caller may treat it as never made.
pub fn was_unsent(status: &Status) -> bool {
    let mut current = StdError::source(status);
    while let Some(e) = current {
        if e.is::<Unsent>() {
            return true;
        }
        current = e.source();
    }
    false
}

trait WithSource {
    fn with_source(self, source: impl StdError + Send + Sync + 'static) -> Self;
}

impl WithSource for Status {
    fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.set_source(Arc::new(source));
        self
    }
}

/// Whether a call that failed with `error` provably never reached the
/// server: the connection could not be made, the server refused the stream
/// (`REFUSED_STREAM`, or a graceful `GOAWAY` before it), or the connection
/// was gone before the request was handed to it. Anything else (a reset
/// mid-call, a timeout) may have done the work.
pub fn never_reached(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            let went_away = h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
            if refused || went_away {
                return true;
            }
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// Follows `endpoint`'s health with a `Health/Watch` stream for as long as
/// the endpoint exists. A NOT_SERVING answer ends the watch (a draining
/// server must not be held open by it) and the endpoint is asked again
/// after `retry_after`, as it is when the stream fails.
async fn watch_health(endpoint: Weak<Endpoint>, upstream: &'static str, retry_after: Duration) {
    loop {
        let Some(channel) = endpoint.upgrade().map(|e| e.channel.clone()) else {
            return;
        };
        let set = |serving: bool| {
            if let Some(e) = endpoint.upgrade()
                && e.serving.swap(serving, Ordering::Relaxed) != serving
            {
                tracing::info!(upstream, endpoint = %e.addr, serving, "endpoint health changed");
            }
        };
        let request = HealthCheckRequest { service: String::new() };
        match HealthClient::new(channel).watch(request).await {
            Ok(answers) => {
                let mut answers = answers.into_inner();
                while let Some(Ok(answer)) = answers.next().await {
                    let serving = answer.status == health_check_response::ServingStatus::Serving as i32;
                    set(serving);
                    if !serving {
                        break;
                    }
                }
                set(false);
            }
            Err(_) => set(false),
        }
        tokio::time::sleep(retry_after).await;
    }
}

/// Resolves every upstream's names now and every `interval` until
/// `shutdown`.
pub async fn resolve_periodically(upstreams: Vec<Arc<Upstream>>, interval: Duration, shutdown: CancellationToken) {
    loop {
        futures::future::join_all(upstreams.iter().map(|u| u.resolve())).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// A channel over the replicas of an upstream for generated clients: each
/// call carries the caller's trace context and goes to the next serving
/// replica whose breaker admits it, moving on while it never reached one.
/// Calls with one request message only (unary and server streaming): the
/// request is read whole before it is sent. Cheap to clone.
#[derive(Clone)]
pub struct Balanced {
    upstream: Arc<Upstream>,
}

impl Balanced {
    /// Over `upstream`, whose names the caller resolves again
    /// ([`resolve_periodically`]) if it has any.
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self { upstream }
    }

    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}

impl tower::Service<http::Request<Body>> for Balanced {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // Here, in the caller's span, so svc-cart → svc-order → catalog is
        // one trace.
        crate::trace::Carrier::current().insert_into(request.headers_mut());
        let upstream = self.upstream.clone();
        Box::pin(async move { upstream.call(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach() -> ReachSettings {
        ReachSettings {
            connect_timeout: Duration::from_millis(50),
            breaker: BreakerSettings {
                failure_threshold: 1,
                cool_down: Duration::from_secs(60),
            },
            health_interval: Duration::from_secs(60),
            resolve_interval: Duration::from_secs(60),
        }
    }

    fn upstream(ports: &[u16]) -> Arc<Upstream> {
        let replicas = Replicas::loopback(ports);
        Upstream::new("order", &replicas, reach(), None)
    }

    fn first_ports(upstream: &Upstream, calls: usize) -> Vec<u16> {
        (0..calls).map(|_| upstream.candidates()[0].addr.port()).collect()
    }

    #[test]
    fn a_setting_names_one_replica_or_several() {
        let mut env = EnvReader::from_map([("ORDER_URL", "http://a:1, http://[::1]:2,http://b")]);
        let replicas = Replicas::read(&mut env, &crate::registry::ORDER, "ORDER_URL");
        env.finish().expect("valid");
        let targets: Vec<(&str, u16)> = replicas.targets.iter().map(|t| (t.host.as_str(), t.port)).collect();
        assert_eq!(targets, [("a", 1), ("::1", 2), ("b", 80)]);

        let mut env = EnvReader::from_map([("ORDER_URL", "https://a:1,nonsense, ")]);
        Replicas::read(&mut env, &crate::registry::ORDER, "ORDER_URL");
        let problems = env.finish().expect_err("invalid").to_string();
        assert!(problems.contains("must be http://"), "{problems}");
        assert!(problems.contains("\"nonsense\""), "{problems}");
    }

    #[tokio::test]
    async fn calls_go_round_the_serving_endpoints_and_to_the_others_only_when_none_serves() {
        let upstream = upstream(&[3, 1, 2]);
        // None has said it serves yet: every one is tried, in turn.
        assert_eq!(first_ports(&upstream, 4), [1, 2, 3, 1]);
        assert_eq!(upstream.candidates().len(), 3);

        let endpoints = upstream.endpoints();
        endpoints[0].serving.store(true, Ordering::Relaxed);
        endpoints[2].serving.store(true, Ordering::Relaxed);
        assert_eq!(
            first_ports(&upstream, 4),
            [3, 1, 3, 1],
            "only the serving ones lead, in turn"
        );
        let all: Vec<u16> = upstream.candidates().iter().map(|e| e.addr.port()).collect();
        assert_eq!(all.len(), 3, "the others stay behind them: {all:?}");
        assert_eq!(all[2], 2);

        // A serving endpoint whose breaker opened is passed over.
        endpoints[2].breaker.admit().expect("closed").report(Outcome::Failure);
        assert_eq!(first_ports(&upstream, 3), [1, 1, 1]);
        let order: Vec<u16> = upstream.candidates().iter().map(|e| e.addr.port()).collect();
        assert_eq!(order[0], 1, "{order:?}");
        assert!(upstream.is_serving());
    }

    /// Every endpoint's health is followed for as long as it exists, however
    /// the runtime schedules the task that follows it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_endpoint_has_its_health_followed() {
        let ports: Vec<u16> = (1..=64).collect();
        let upstream = upstream(&ports);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stopped: Vec<u16> = upstream
            .endpoints()
            .iter()
            .filter(|e| e.health.get().is_none_or(|task| task.is_finished()))
            .map(|e| e.addr.port())
            .collect();
        assert!(stopped.is_empty(), "no health is followed for {stopped:?}");
    }

    #[tokio::test]
    async fn new_addresses_join_and_known_ones_keep_their_state() {
        let upstream = upstream(&[1, 2]);
        let kept = upstream.endpoints()[1].clone();
        kept.serving.store(true, Ordering::Relaxed);
        upstream.set_endpoints(vec![
            SocketAddr::from(([127, 0, 0, 1], 2)),
            SocketAddr::from(([127, 0, 0, 1], 3)),
        ]);
        let now = upstream.endpoints();
        assert_eq!(now.iter().map(|e| e.addr.port()).collect::<Vec<_>>(), [2, 3]);
        assert!(Arc::ptr_eq(&now[0], &kept), "the same endpoint, connection and breaker");
        assert!(now[0].serving.load(Ordering::Relaxed));
        assert!(
            !now[1].serving.load(Ordering::Relaxed),
            "a new one serves once it says so"
        );
    }

    #[tokio::test]
    async fn a_name_that_stops_resolving_keeps_the_endpoints_known() {
        let replicas = Replicas {
            urls: String::new(),
            targets: vec![
                Target {
                    host: "localhost".into(),
                    port: 7,
                },
                Target {
                    host: "no-such-host.invalid".into(),
                    port: 7,
                },
            ],
        };
        let upstream = Upstream::new("order", &replicas, reach(), None);
        upstream.set_endpoints(vec![SocketAddr::from(([127, 0, 0, 1], 9))]);
        upstream.resolve().await;
        let ports: Vec<u16> = upstream.endpoints().iter().map(|e| e.addr.port()).collect();
        assert_eq!(ports, [9], "one name failing keeps what was known");
    }
}
