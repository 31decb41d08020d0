//! Where a stack's parts listen: the servers, every replica of every
//! service, the payment provider emulator, and the port offset that moves
//! them all together. What `up`, the test runs and the commands that
//! inspect a stack (`dlq`, `verify`) agree on.

use std::path::{Path, PathBuf};

use anyhow::bail;
use shop_infra::infra::{self};
use shop_runtime::registry::{self, ServiceSpec};

use crate::ports::{self, Port};

/// The ports of the servers `up` starts itself. PostgreSQL and Redis stay
/// off 5432 and 6379, which the Debian packages' own services take as soon
/// as `cargo xtask install` installs them. NATS keeps its default, which the
/// nats CLI uses when given no server.
const NATS_PORT: u16 = 4222;
/// Where the three nodes of `--nats-cluster` route to each other (their
/// clients use 4222, 4223 and 4224), as in `nats/cluster/`.
const NATS_ROUTE_PORT: u16 = 6222;
const POSTGRES_PORT: u16 = 15432;
const REDIS_PORT: u16 = 16379;
/// The emulator's own default port.
const PROVIDER_PORT: u16 = shop_provider::config::DEFAULT_LISTEN_ADDR.port();

/// Where svc-payment is told its provider is; `up` starts the emulator
/// unless the environment names one.
pub(crate) const PROVIDER_URL_VAR: &str = "PAYMENT_PROVIDER_URL";

/// Where the NATS, PostgreSQL and payment provider of the stack of `up`
/// are, for the commands that inspect it (`dlq`, `verify`): the URLs in the
/// environment, or the ports `up` starts them on (with the port offset).
pub(crate) struct Servers {
    pub(crate) nats: String,
    pub(crate) postgres: String,
    pub(crate) provider: String,
}

pub(crate) fn servers_from_env() -> anyhow::Result<Servers> {
    let layout = Layout::from_env()?;
    Ok(Servers {
        nats: layout.nats.url(infra::nats_url),
        postgres: layout.postgres.url(infra::postgres_url),
        provider: layout.provider.url(provider_url),
    })
}

/// The emulator's URL when it listens on `port` here.
pub(crate) fn provider_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The services, from the registry, started in its order (what others call
/// first) and stopped in reverse.
pub(crate) const SERVICES: &[&ServiceSpec] = registry::ALL;

/// The storefront's sources (`web/`).
pub(crate) fn storefront_sources() -> PathBuf {
    crate::cmd::root().join("web")
}

/// The built storefront (`web/dist`), which the gateway serves.
pub(crate) fn storefront() -> PathBuf {
    storefront_sources().join("dist")
}

/// Where each part listens, with the port offset applied.
pub(crate) struct Layout {
    pub(crate) offset: u16,
    pub(crate) nats: Infra,
    pub(crate) postgres: Infra,
    pub(crate) redis: Infra,
    /// The payment provider svc-payment charges through: the emulator,
    /// unless `PAYMENT_PROVIDER_URL` names one.
    pub(crate) provider: Infra,
    /// Every replica of every service, a service's replicas together and in
    /// the order of [`SERVICES`].
    pub(crate) services: Vec<Placed>,
    /// How many replicas of each service there are.
    pub(crate) replicas: usize,
    /// Where the services send their spans, if anywhere.
    pub(crate) otlp_endpoint: Option<String>,
    /// The nodes, when NATS runs as a three-node cluster here.
    pub(crate) nats_cluster: Option<[infra::ClusterPorts; 3]>,
    /// Settings every service is given on top of the stack's own.
    pub(crate) service_env: Vec<(&'static str, String)>,
}

/// A server the environment points at, or one to start on a port.
pub(crate) enum Infra {
    Given { var: &'static str, url: String },
    Start(u16),
}

impl Infra {
    pub(crate) fn url(&self, on_port: fn(u16) -> String) -> String {
        match self {
            Infra::Given { url, .. } => url.clone(),
            Infra::Start(port) => on_port(*port),
        }
    }
}

pub(crate) struct Placed {
    pub(crate) service: &'static ServiceSpec,
    /// Which of the service's replicas, from 1.
    pub(crate) replica: usize,
    pub(crate) grpc_port: u16,
    pub(crate) admin_port: u16,
}

impl Placed {
    /// Its process and log name: the first replica is the service's own
    /// name, so a stack of one replica reads as it always has; the others
    /// add their number (`svc-order-2`).
    pub(crate) fn name(&self) -> String {
        match self.replica {
            1 => self.service.name.to_owned(),
            k => format!("{}-{k}", self.service.name),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }
}

/// Every service `replicas` times on its fixed ports (see
/// [`ports::of_replica`]) moved by `offset`.
fn placed(offset: u16, replicas: usize) -> anyhow::Result<Vec<Placed>> {
    let mut services = Vec::with_capacity(SERVICES.len() * replicas);
    for service in SERVICES {
        for replica in 1..=replicas {
            services.push(Placed {
                service,
                replica,
                grpc_port: ports::of_replica(service.grpc_port, replica, offset)?,
                admin_port: ports::of_replica(service.admin_port, replica, offset)?,
            });
        }
    }
    Ok(services)
}

impl Layout {
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        Self::with_offset(ports::offset_from_env()?)
    }

    /// Every port moved by `offset`; servers the environment names are used
    /// rather than started.
    pub(crate) fn with_offset(offset: u16) -> anyhow::Result<Self> {
        let infra = |var: &'static str, port: u16| -> anyhow::Result<Infra> {
            Ok(match std::env::var(var).ok().filter(|url| !url.is_empty()) {
                Some(url) => Infra::Given { var, url },
                None => Infra::Start(ports::shifted(port, offset)?),
            })
        };
        Ok(Self {
            offset,
            nats: infra("NATS_URL", NATS_PORT)?,
            postgres: infra("DATABASE_URL", POSTGRES_PORT)?,
            redis: infra("REDIS_URL", REDIS_PORT)?,
            provider: infra(PROVIDER_URL_VAR, PROVIDER_PORT)?,
            services: placed(offset, 1)?,
            replicas: 1,
            otlp_endpoint: None,
            nats_cluster: None,
            service_env: Vec::new(),
        })
    }

    /// NATS as the three-node cluster of `nats/cluster/` (its ports moved
    /// by the offset), unless the environment names a NATS.
    pub(crate) fn with_nats_cluster(mut self) -> anyhow::Result<Self> {
        if let Infra::Start(_) = self.nats {
            let node = |n: u16| -> anyhow::Result<infra::ClusterPorts> {
                Ok(infra::ClusterPorts {
                    port: ports::shifted(NATS_PORT + n, self.offset)?,
                    route_port: ports::shifted(NATS_ROUTE_PORT + n, self.offset)?,
                })
            };
            self.nats_cluster = Some([node(0)?, node(1)?, node(2)?]);
        }
        Ok(self)
    }

    /// `replicas` of every service (from 1, at most
    /// [`ports::MAX_REPLICAS`]), replica k on its service's ports moved by
    /// k - 1 steps of [`ports::REPLICA_STEP`] and then by the offset: fixed
    /// ports, which a tool told the count finds again.
    pub(crate) fn with_replicas(mut self, replicas: usize) -> anyhow::Result<Self> {
        if !(1..=ports::MAX_REPLICAS).contains(&replicas) {
            bail!(
                "{replicas} replicas: `up` runs 1 to {} of each service",
                ports::MAX_REPLICAS
            );
        }
        self.services = placed(self.offset, replicas)?;
        self.replicas = replicas;
        Ok(self)
    }

    /// Every server, and `replicas` of every service, on a port that was
    /// free a moment ago, for a stack that must not meet any other (a fault
    /// run, next to a running `up`).
    pub(crate) fn on_free_ports(replicas: usize) -> Self {
        let free = || Infra::Start(infra::free_port());
        Self {
            offset: 0,
            nats: free(),
            postgres: free(),
            redis: free(),
            provider: free(),
            services: SERVICES
                .iter()
                .flat_map(|service| {
                    (1..=replicas).map(move |replica| Placed {
                        service,
                        replica,
                        grpc_port: infra::free_port(),
                        admin_port: infra::free_port(),
                    })
                })
                .collect(),
            replicas,
            otlp_endpoint: None,
            nats_cluster: None,
            service_env: Vec::new(),
        }
    }

    /// NATS as a three-node cluster on ports that were free a moment ago.
    pub(crate) fn with_free_nats_cluster(mut self) -> Self {
        let node = || infra::ClusterPorts {
            port: infra::free_port(),
            route_port: infra::free_port(),
        };
        self.nats_cluster = Some([node(), node(), node()]);
        self
    }

    /// The nodes of the NATS cluster this layout starts, if it does.
    pub(crate) fn nats_nodes(&self) -> Option<&[infra::ClusterPorts; 3]> {
        self.nats_cluster.as_ref()
    }

    /// The port of a server this layout starts itself.
    pub(crate) fn infra_ports(&self) -> Option<InfraPorts> {
        match (&self.nats, &self.postgres, &self.redis) {
            (Infra::Start(nats), Infra::Start(postgres), Infra::Start(redis)) => Some(InfraPorts {
                nats: *nats,
                postgres: *postgres,
                redis: *redis,
            }),
            _ => None,
        }
    }

    /// Every port something started here will listen on.
    pub(crate) fn ports(&self) -> Vec<Port> {
        // A cluster's nodes take the place of the single nats-server.
        let single_nats = self.nats_cluster.is_none().then_some((&self.nats, "nats-server"));
        let infra = single_nats.into_iter().chain([
            (&self.postgres, "PostgreSQL"),
            (&self.redis, "redis-server"),
            (&self.provider, shop_provider::SERVICE.name),
        ]);
        let infra = infra.filter_map(|(infra, what)| match infra {
            Infra::Start(port) => Some(Port {
                number: *port,
                purpose: what.to_owned(),
            }),
            Infra::Given { .. } => None,
        });
        let services = self.services.iter().flat_map(|placed| {
            // "svc-order gRPC", or with several: "svc-order replica 2 gRPC".
            let who = match self.replicas {
                1 => placed.service.name.to_owned(),
                _ => format!("{} replica {}", placed.service.name, placed.replica),
            };
            [
                Port {
                    number: placed.grpc_port,
                    purpose: format!("{who} gRPC"),
                },
                Port {
                    number: placed.admin_port,
                    purpose: format!("{who} admin"),
                },
            ]
        });
        let cluster = self.nats_cluster.iter().flatten().enumerate().flat_map(|(i, node)| {
            [
                Port {
                    number: node.port,
                    purpose: format!("nats-server node {}", i + 1),
                },
                Port {
                    number: node.route_port,
                    purpose: format!("nats-server node {} routes", i + 1),
                },
            ]
        });
        infra.chain(cluster).chain(services).collect()
    }

    /// Where the servers keep their data: `.data/`, or for a stack moved by
    /// an offset, a directory of its own inside it.
    pub(crate) fn data_dir(&self, root: &Path) -> PathBuf {
        match self.offset {
            0 => root.join(".data"),
            offset => root.join(".data").join(format!("offset-{offset}")),
        }
    }

    /// Where the payment provider posts its webhooks: the first gateway's
    /// public port.
    pub(crate) fn webhook_url(&self) -> Option<String> {
        self.gateway_port()
            .map(|port| format!("http://127.0.0.1:{port}{}", registry::PAYMENT_WEBHOOKS_PATH))
    }

    /// Where the provider's 3-D Secure page sends a customer back
    /// (`PAYMENT_RETURN_URL`): the storefront's page of the order, on the
    /// first gateway.
    pub(crate) fn payment_return_url(&self) -> Option<String> {
        self.gateway_port()
            .map(|port| format!("http://127.0.0.1:{port}/#/orders/{{order_id}}"))
    }

    /// The gRPC port of the first gateway.
    pub(crate) fn gateway_port(&self) -> Option<u16> {
        self.gateway_ports().first().copied()
    }

    /// The gRPC ports of every gateway, first replica first, for load
    /// spread over them.
    pub(crate) fn gateway_ports(&self) -> Vec<u16> {
        self.replicas_of(&registry::GATEWAY)
            .map(|placed| placed.grpc_port)
            .collect()
    }

    fn replicas_of<'a>(&'a self, service: &'a ServiceSpec) -> impl Iterator<Item = &'a Placed> {
        self.services.iter().filter(move |placed| placed.service == service)
    }

    /// Where the others are told `service` is: every replica's URL, first
    /// replica first, comma-separated (a single URL for one replica).
    pub(crate) fn urls_of(&self, service: &ServiceSpec) -> String {
        self.replicas_of(service).map(Placed::url).collect::<Vec<_>>().join(",")
    }
}

/// The ports of NATS, PostgreSQL and Redis when all three start here.
pub(crate) struct InfraPorts {
    pub(crate) nats: u16,
    pub(crate) postgres: u16,
    pub(crate) redis: u16,
}

/// Where the infrastructure is, as the services are told.
pub(crate) struct Urls {
    pub(crate) nats: String,
    pub(crate) postgres: String,
    pub(crate) redis: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::observe::Observe;

    #[test]
    fn with_replicas_every_port_up_listens_on_is_its_own() -> anyhow::Result<()> {
        for replicas in [2, ports::MAX_REPLICAS] {
            for cluster in [false, true] {
                let mut layout = Layout::with_offset(0)?.with_replicas(replicas)?;
                if cluster {
                    layout = layout.with_nats_cluster()?;
                }
                let mut needed = layout.ports();
                needed.extend(Observe::at(0)?.ports());
                assert_eq!(layout.services.len(), SERVICES.len() * replicas);
                let mut seen = BTreeMap::new();
                for port in &needed {
                    if let Some(other) = seen.insert(port.number, &port.purpose) {
                        panic!("{} for both {other} and {}", port.number, port.purpose);
                    }
                    // Where Debian's own Prometheus and node exporter listen.
                    assert!(![9090, 9100].contains(&port.number), "{port:?}");
                }
                assert!(
                    needed.iter().any(|p| p.purpose == "svc-order replica 2 gRPC"),
                    "{needed:?}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn one_replica_keeps_the_registry_ports_names_and_purposes() -> anyhow::Result<()> {
        let layout = Layout::with_offset(0)?;
        let placed: Vec<_> = layout
            .services
            .iter()
            .map(|p| (p.name(), p.replica, p.grpc_port, p.admin_port))
            .collect();
        let registry: Vec<_> = SERVICES
            .iter()
            .map(|s| (s.name.to_owned(), 1, s.grpc_port, s.admin_port))
            .collect();
        assert_eq!(placed, registry);
        assert!(layout.ports().iter().any(|p| p.purpose == "svc-order gRPC"));
        assert_eq!(layout.gateway_ports(), [registry::GATEWAY.grpc_port]);
        assert!(
            layout
                .ports()
                .iter()
                .any(|p| p.number == 12111 && p.purpose == "payment-provider"),
            "the emulator on its own default port"
        );
        assert_eq!(
            layout.webhook_url().as_deref(),
            Some("http://127.0.0.1:8080/webhooks/payments")
        );
        Ok(())
    }

    #[test]
    fn replicas_past_the_first_move_by_steps_and_are_named_by_number() -> anyhow::Result<()> {
        let layout = Layout::with_offset(10)?.with_replicas(3)?;
        let orders: Vec<_> = layout
            .services
            .iter()
            .filter(|p| *p.service == registry::ORDER)
            .map(|p| (p.name(), p.grpc_port, p.admin_port))
            .collect();
        assert_eq!(
            orders,
            [
                ("svc-order".to_owned(), 50061, 9061),
                ("svc-order-2".to_owned(), 50161, 9161),
                ("svc-order-3".to_owned(), 50261, 9261),
            ]
        );
        assert_eq!(layout.gateway_ports(), [8090, 8190, 8290]);
        assert_eq!(layout.gateway_port(), Some(8090));
        for wrong in [0, ports::MAX_REPLICAS + 1] {
            assert!(
                Layout::with_offset(0)?.with_replicas(wrong).is_err(),
                "{wrong} replicas"
            );
        }
        Ok(())
    }
}
