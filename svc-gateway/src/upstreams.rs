//! The services behind the gateway ([`shop_runtime::upstream`]: every
//! replica of each, its health and breaker), and which public service each
//! one owns.
//!
//! The gateway's own gRPC health reports each public service SERVING while
//! some endpoint of its owner is ([`report_health`]).

use std::{collections::HashMap, sync::Arc, time::Duration};

use shop_runtime::{
    CancellationToken,
    upstream::{ReachSettings, Upstream},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::config::UpstreamUrls;

/// An upstream and the public services it owns.
pub struct Owner {
    pub upstream: Arc<Upstream>,
    pub services: &'static [&'static str],
}

pub struct Upstreams {
    all: Vec<Owner>,
    by_service: HashMap<&'static str, Arc<Upstream>>,
}

impl Upstreams {
    /// Every upstream, with the endpoints its addresses give at once; names
    /// are resolved by [`resolve_periodically`]. Nothing connects until the
    /// first call or health watch, so the gateway starts whatever is up.
    pub fn new(urls: &UpstreamUrls, reach: ReachSettings) -> Self {
        let mut all = Vec::new();
        let mut by_service = HashMap::new();
        for (spec, replicas) in urls.iter() {
            // No deadline of the channel's own: the gateway sets each call's.
            let upstream = Upstream::new(spec.short, replicas, reach, None);
            for service in spec.serves {
                by_service.insert(*service, upstream.clone());
            }
            all.push(Owner {
                upstream,
                services: spec.serves,
            });
        }
        Self { all, by_service }
    }

    pub fn owner_of(&self, service: &str) -> Option<&Arc<Upstream>> {
        self.by_service.get(service)
    }

    pub fn all(&self) -> &[Owner] {
        &self.all
    }
}

/// Resolves every upstream's names now and every `interval` until
/// `shutdown`.
pub async fn resolve_periodically(upstreams: Arc<Upstreams>, interval: Duration, shutdown: CancellationToken) {
    let all = upstreams.all().iter().map(|owner| owner.upstream.clone()).collect();
    shop_runtime::upstream::resolve_periodically(all, interval, shutdown).await
}

/// Reports each public service SERVING while some endpoint of its owner is,
/// every `interval`; the overall status (`""`) is SERVING only while every
/// upstream is. From `shutdown` on, everything is NOT_SERVING.
pub async fn report_health(
    upstreams: Arc<Upstreams>,
    reporter: HealthReporter,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut previous: HashMap<&'static str, ServingStatus> = HashMap::new();
    loop {
        let mut all_serving = true;
        for Owner { upstream, services } in upstreams.all() {
            let status = if upstream.is_serving() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            all_serving &= status == ServingStatus::Serving;
            // Only changes are reported: `Health/Watch` streams send one
            // message per report.
            for service in *services {
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
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    // Going: said at once, so clients following the gateway's health (and
    // a kubelet's probe) move to another replica, and watchers end their
    // streams rather than hold the shutdown open.
    for service in previous.keys() {
        reporter.set_service_status(*service, ServingStatus::NotServing).await;
    }
}
