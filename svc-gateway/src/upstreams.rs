//! The services behind the gateway, and every replica of each.
//!
//! An upstream is what the configuration names for one service (one URL or
//! several); its endpoints are the addresses those names resolve to, found
//! again every resolve interval ([`resolve_periodically`]), so replicas that
//! start or stop behind a headless Service are picked up. Each endpoint has
//! its own HTTP/2 channel, its own circuit breaker and its own health: a
//! gRPC `Health/Watch` stream, so a replica that starts draining (NOT_SERVING
//! at SIGTERM) or dies (the stream breaks) gets no new call from the next
//! one on. Calls go round the serving endpoints in turn
//! ([`Upstream::candidates`]).
//!
//! The gateway's own gRPC health reports each public service SERVING while
//! some endpoint of its owner is ([`report_health`]).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use shop_runtime::{
    CancellationToken,
    breaker::{BreakerSettings, CircuitBreaker},
};
use tonic::transport::{Channel, Endpoint as ChannelEndpoint};
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_check_response, health_client::HealthClient},
    server::HealthReporter,
};

use crate::config::{Target, UpstreamUrls};

/// How the gateway connects to every endpoint.
#[derive(Debug, Clone, Copy)]
pub struct ConnectSettings {
    pub connect_timeout: Duration,
    pub breaker: BreakerSettings,
    /// How soon an endpoint whose health watch failed is watched again.
    pub retry_health_after: Duration,
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
    health: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(task) = self.health.get() {
            task.abort();
        }
    }
}

impl Endpoint {
    #[cfg(test)]
    fn health_task(&self) -> Option<&tokio::task::AbortHandle> {
        self.health.get()
    }

    /// Whether it says it is serving and its calls get through: a replica
    /// whose breaker opened is not, whatever its health stream last said
    /// (a stream can outlive the server behind it).
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed) && !self.breaker.is_open()
    }
}

pub struct Upstream {
    pub name: &'static str,
    /// The URL setting, for logs.
    pub url: String,
    /// The public services it owns.
    pub services: Vec<&'static str>,
    targets: Vec<Target>,
    endpoints: RwLock<Arc<[Arc<Endpoint>]>>,
    turn: AtomicUsize,
    connect: ConnectSettings,
}

impl Upstream {
    /// Every endpoint, serving ones first, starting with the next one in
    /// turn. The caller takes the first whose breaker admits the call; when
    /// none says it is serving (the gateway just started, or every replica
    /// is draining), the others are still tried rather than nothing.
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
        let channel = match ChannelEndpoint::from_shared(format!("http://{addr}")) {
            Ok(endpoint) => endpoint
                .connect_timeout(self.connect.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .connect_lazy(),
            Err(e) => {
                tracing::error!(upstream = self.name, %addr, error = %e, "cannot make a channel");
                return None;
            }
        };
        let endpoint = Arc::new(Endpoint {
            addr,
            channel,
            breaker: self.connect.breaker.breaker_for(self.name, addr.to_string()),
            serving: AtomicBool::new(false),
            health: std::sync::OnceLock::new(),
        });
        // Spawned once the endpoint exists: the task holds it only weakly,
        // and a task started inside its construction could find it missing.
        let health = tokio::spawn(watch_health(
            Arc::downgrade(&endpoint),
            self.name,
            self.connect.retry_health_after,
        ));
        let _ = endpoint.health.set(health.abort_handle());
        Some(endpoint)
    }

    /// Resolves every target again; an answer that fails keeps what was
    /// known (a DNS hiccup must not empty the upstream).
    async fn resolve(&self) {
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
}

/// Follows `endpoint`'s health with a `Health/Watch` stream for as long as
/// the endpoint exists. A NOT_SERVING answer ends the watch (a draining
/// server must not be held open by it) and the endpoint is asked again
/// after `retry_after`, as it is when the stream fails.
async fn watch_health(endpoint: std::sync::Weak<Endpoint>, upstream: &'static str, retry_after: Duration) {
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

pub struct Upstreams {
    all: Vec<Arc<Upstream>>,
    by_service: HashMap<&'static str, Arc<Upstream>>,
}

impl Upstreams {
    /// Every upstream, with the endpoints its addresses give at once; names
    /// are resolved by [`resolve_periodically`]. Nothing connects until the
    /// first call or health watch, so the gateway starts whatever is up.
    pub fn new(urls: &UpstreamUrls, connect: ConnectSettings) -> Self {
        let mut all = Vec::new();
        let mut by_service = HashMap::new();
        for (spec, url, targets) in urls.iter() {
            let upstream = Arc::new(Upstream {
                name: spec.short,
                url: url.to_owned(),
                services: spec.serves.to_vec(),
                targets: targets.to_vec(),
                endpoints: RwLock::new(Arc::from(Vec::new())),
                turn: AtomicUsize::new(0),
                connect,
            });
            let literal: Option<Vec<SocketAddr>> = targets
                .iter()
                .map(|t| t.host.parse().ok().map(|ip| SocketAddr::new(ip, t.port)))
                .collect();
            if let Some(addrs) = literal {
                upstream.set_endpoints(addrs);
            }
            for service in spec.serves {
                by_service.insert(*service, upstream.clone());
            }
            all.push(upstream);
        }
        Self { all, by_service }
    }

    pub fn owner_of(&self, service: &str) -> Option<&Arc<Upstream>> {
        self.by_service.get(service)
    }

    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.all
    }
}

/// Resolves every upstream's names now and every `interval` until
/// `shutdown`.
pub async fn resolve_periodically(upstreams: Arc<Upstreams>, interval: Duration, shutdown: CancellationToken) {
    loop {
        futures::future::join_all(upstreams.all().iter().map(|u| u.resolve())).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Reports each public service SERVING while some endpoint of its owner is,
/// every `interval`; the overall status (`""`) is SERVING only while every
/// upstream is.
pub async fn report_health(
    upstreams: Arc<Upstreams>,
    reporter: HealthReporter,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut previous: HashMap<&'static str, ServingStatus> = HashMap::new();
    loop {
        let mut all_serving = true;
        for upstream in upstreams.all() {
            let status = if upstream.is_serving() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            all_serving &= status == ServingStatus::Serving;
            // Only changes are reported: `Health/Watch` streams send one
            // message per report.
            for service in &upstream.services {
                if previous.insert(service, status) != Some(status) {
                    tracing::info!(service, upstream = upstream.name, ?status, "upstream health changed");
                    reporter.set_service_status(*service, status).await;
                }
            }
        }
        let overall = if all_serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if previous.insert("", overall) != Some(overall) {
            reporter.set_service_status("", overall).await;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(ports: &[u16]) -> Upstream {
        let upstream = Upstream {
            name: "order",
            url: String::new(),
            services: Vec::new(),
            targets: Vec::new(),
            endpoints: RwLock::new(Arc::from(Vec::new())),
            turn: AtomicUsize::new(0),
            connect: ConnectSettings {
                connect_timeout: Duration::from_millis(50),
                breaker: BreakerSettings {
                    failure_threshold: 1,
                    cool_down: Duration::from_secs(60),
                },
                retry_health_after: Duration::from_secs(60),
            },
        };
        upstream.set_endpoints(ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect());
        upstream
    }

    fn first_ports(upstream: &Upstream, calls: usize) -> Vec<u16> {
        (0..calls).map(|_| upstream.candidates()[0].addr.port()).collect()
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
        endpoints[2]
            .breaker
            .admit()
            .expect("closed")
            .report(shop_runtime::breaker::Outcome::Failure);
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
            .filter(|e| e.health_task().is_none_or(|task| task.is_finished()))
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
}
