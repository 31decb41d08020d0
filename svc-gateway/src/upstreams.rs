//! The services behind the gateway: which public service each one owns, a
//! pooled HTTP/2 channel and a circuit breaker per upstream, and the health
//! poll that feeds the gateway's own gRPC health.

use std::{collections::HashMap, sync::Arc, time::Duration};

use shop_runtime::{CancellationToken, breaker::CircuitBreaker};
use tonic::transport::{Channel, Endpoint};
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_check_response, health_client::HealthClient},
    server::HealthReporter,
};

use shop_runtime::breaker::BreakerSettings;

use crate::config::UpstreamUrls;

pub struct Upstream {
    pub name: &'static str,
    pub url: String,
    /// The public services it owns.
    pub services: Vec<&'static str>,
    /// A lazily connecting, reconnecting, multiplexed HTTP/2 client.
    pub channel: Channel,
    pub breaker: CircuitBreaker,
}

pub struct Upstreams {
    all: Vec<Arc<Upstream>>,
    by_service: HashMap<&'static str, Arc<Upstream>>,
}

impl Upstreams {
    /// Channels to every upstream; nothing connects until the first call, so
    /// the gateway starts whatever is up.
    pub fn connect_lazily(
        urls: &UpstreamUrls,
        connect_timeout: Duration,
        breaker: BreakerSettings,
    ) -> Result<Self, tonic::transport::Error> {
        let mut all = Vec::new();
        let mut by_service = HashMap::new();
        for (spec, url) in urls.iter() {
            let name = spec.short;
            let channel = Endpoint::from_shared(url.clone())?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .connect_lazy();
            let services: Vec<&'static str> = spec.serves.to_vec();
            let upstream = Arc::new(Upstream {
                name,
                url: url.clone(),
                services: services.clone(),
                channel,
                breaker: breaker.breaker(name),
            });
            for service in services {
                by_service.insert(service, upstream.clone());
            }
            all.push(upstream);
        }
        Ok(Self { all, by_service })
    }

    pub fn owner_of(&self, service: &str) -> Option<&Arc<Upstream>> {
        self.by_service.get(service)
    }

    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.all
    }
}

/// Asks `upstream` about `service`; an upstream that does not know the name
/// is asked about itself as a whole.
async fn check(upstream: &Upstream, service: &str, timeout: Duration) -> ServingStatus {
    let mut client = HealthClient::new(upstream.channel.clone());
    for name in [service, ""] {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: name.to_owned(),
        });
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.check(request)).await {
            Ok(Ok(response)) if response.get_ref().status == health_check_response::ServingStatus::Serving as i32 => {
                return ServingStatus::Serving;
            }
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => continue,
            _ => return ServingStatus::NotServing,
        }
    }
    ServingStatus::NotServing
}

/// Polls every upstream every `interval` and reports each public service
/// under its own name; the overall status (`""`) is SERVING only while every
/// upstream is.
pub async fn report_health(
    upstreams: Arc<Upstreams>,
    reporter: HealthReporter,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let timeout = interval.min(Duration::from_secs(2));
    let mut previous: HashMap<&'static str, ServingStatus> = HashMap::new();
    loop {
        let checks = upstreams.all().iter().flat_map(|upstream| {
            upstream
                .services
                .iter()
                .map(move |service| async move { (*service, upstream.name, check(upstream, service, timeout).await) })
        });
        let results = futures::future::join_all(checks).await;
        let mut all_serving = true;
        // Only changes are reported: `Health/Watch` streams send one
        // message per report.
        for (service, upstream, status) in results {
            all_serving &= status == ServingStatus::Serving;
            if previous.insert(service, status) != Some(status) {
                tracing::info!(service, upstream, ?status, "upstream health changed");
                reporter.set_service_status(service, status).await;
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
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
