//! The life every service shares: a [`Host`] supervises its background
//! tasks, serves the admin port with the readiness of the parts it was
//! given, serves gRPC, and on shutdown stops every task before returning.
//!
//! The parts are optional and each adds its own readiness check:
//! [`Host::postgres`] (connect and migrate), [`Host::nats`] (connect and
//! ensure the streams) and, for what only one service has (svc-cart's
//! Redis, the gateway's signing keys), [`Host::ready_when`].
//!
//! ```ignore
//! let mut host = Host::new(&registry::ORDER, shutdown);
//! let pool = host.postgres(&config.database, sqlx::migrate!("./migrations")).await?;
//! let bus = host.nats(&config.messaging).await?;
//! host.spawn_relay(&bus, &pool, &outbox);
//! host.spawn_consumer(&bus, saga::PAYMENTS_CONSUMER, handler).await?;
//! host.serve(router, listeners).await
//! ```

use std::{future::Future, sync::Arc};

use async_nats::jetstream;
use sqlx::{PgPool, migrate::Migrator};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    Listeners, admin,
    admin::ReadinessCheck,
    config::{DatabaseSettings, MessagingSettings},
    consumer::{self, EventHandler},
    db, grpc,
    outbox::Outbox,
    registry::ServiceSpec,
    topology::{self, TopologyError},
};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("NATS: {0}")]
    Nats(#[from] async_nats::ConnectError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("{what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl HostError {
    /// A service-specific start-up failure (a client, a sender).
    pub fn setup(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Setup {
            what,
            source: Box::new(source),
        }
    }
}

/// A service being started: its tasks, its readiness and its consumers.
pub struct Host {
    service: &'static ServiceSpec,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    readiness: Vec<(&'static str, ReadinessCheck)>,
    consumers: Vec<String>,
    health: Option<tonic_health::server::HealthReporter>,
}

/// The NATS part: a connection whose streams are ensured.
#[derive(Clone)]
pub struct Bus {
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    settings: MessagingSettings,
}

impl Host {
    pub fn new(service: &'static ServiceSpec, shutdown: CancellationToken) -> Self {
        // The recorder first: what the tasks record before the admin port
        // serves would otherwise be lost.
        admin::metrics_handle();
        crate::telemetry::ensure_installed(service);
        Self {
            service,
            shutdown,
            tasks: JoinSet::new(),
            readiness: Vec::new(),
            consumers: Vec::new(),
            health: None,
        }
    }

    /// Connects to the service's database and applies the messaging and the
    /// service's migrations; ready while the database answers.
    pub async fn postgres(&mut self, settings: &DatabaseSettings, migrations: Migrator) -> Result<PgPool, HostError> {
        let pool = db::connect(settings.url.expose(), settings.max_connections, settings.limits).await?;
        db::migrate(&pool, migrations).await?;
        let probe = pool.clone();
        self.ready_when(
            "database",
            Arc::new(move || {
                let pool = probe.clone();
                Box::pin(async move {
                    sqlx::query("SELECT 1")
                        .execute(&pool)
                        .await
                        .map(drop)
                        .map_err(|_| "database unreachable".to_owned())
                })
            }),
        );
        Ok(pool)
    }

    /// Connects to NATS and ensures the streams; ready while connected.
    pub async fn nats(&mut self, settings: &MessagingSettings) -> Result<Bus, HostError> {
        let (nats, js) = crate::nats::connect(settings.nats_url.expose(), self.service.name).await?;
        topology::ensure_streams(&js).await?;
        self.spawn(crate::dlq::report_depth(js.clone(), self.shutdown()));
        let probe = nats.clone();
        self.ready_when(
            "NATS",
            Arc::new(move || {
                let connected = probe.connection_state() == async_nats::connection::State::Connected;
                Box::pin(async move {
                    if connected {
                        Ok(())
                    } else {
                        Err("NATS disconnected".to_owned())
                    }
                })
            }),
        );
        Ok(Bus {
            nats,
            js,
            settings: settings.clone(),
        })
    }

    /// Adds a readiness check of `what` (a dependency, named in `/readyz`
    /// when it does not answer in time); ready when all of them are.
    pub fn ready_when(&mut self, what: &'static str, check: ReadinessCheck) {
        self.readiness.push((what, check));
    }

    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs `task` until shutdown; it must watch [`Host::shutdown`] itself.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Publishes what `outbox` stages in `pool`.
    pub fn spawn_relay(&mut self, bus: &Bus, pool: &PgPool, outbox: &Outbox) {
        let relay = outbox.relay(pool.clone(), bus.js.clone(), bus.settings.outbox_poll_interval);
        self.tasks.spawn(relay.run(self.shutdown.clone()));
    }

    /// Ensures the durable consumer declared as `name` in `nats/consumers`
    /// and hands its messages to `handler`. The consumer must be this
    /// service's: its name begins with the service's short name.
    pub async fn spawn_consumer<H: EventHandler>(
        &mut self,
        bus: &Bus,
        name: &str,
        handler: H,
    ) -> Result<(), HostError> {
        if topology::owner_of_consumer(name) != Some(self.service.short) {
            return Err(TopologyError::NotOwn {
                consumer: name.to_owned(),
                service: self.service.name,
            }
            .into());
        }
        let definition = topology::ensure_consumers(&bus.js, &[name]).await?.remove(0);
        self.consumers.push(name.to_owned());
        self.tasks.spawn(consumer::run(
            bus.js.clone(),
            definition,
            Arc::new(handler),
            bus.settings.consumer_concurrency,
            self.shutdown.clone(),
        ));
        Ok(())
    }

    /// Serves the admin port and `router` on the gRPC port until shutdown,
    /// then stops every task and returns. gRPC health (`health`, of the
    /// router) follows readiness: each of the service's gRPC services, and
    /// the server as a whole, is SERVING exactly while `/readyz` is ready.
    pub async fn serve(
        mut self,
        router: grpc::ServiceRouter,
        health: tonic_health::server::HealthReporter,
        listeners: Listeners,
    ) -> Result<(), HostError> {
        self.health = Some(health);
        self.serve_with(listeners, |listener, shutdown| async move {
            Ok(grpc::serve(router, listener, shutdown.cancelled_owned()).await?)
        })
        .await
    }

    /// Like [`Host::serve`], with a server of the service's own making on
    /// the gRPC port (the gateway's edge); it must return on `shutdown`.
    ///
    /// Refuses to start when a consumer declared for this service in
    /// `nats/consumers` has no handler.
    pub async fn serve_with<F>(
        mut self,
        listeners: Listeners,
        server: impl FnOnce(TcpListener, CancellationToken) -> F,
    ) -> Result<(), HostError>
    where
        F: Future<Output = Result<(), HostError>>,
    {
        let unhandled: Vec<&str> = topology::consumers_of(self.service.short)
            .into_iter()
            .filter(|name| !self.consumers.iter().any(|run| run == name))
            .collect();
        if !unhandled.is_empty() {
            self.shutdown.cancel();
            while self.tasks.join_next().await.is_some() {}
            return Err(TopologyError::Unhandled {
                service: self.service.name,
                consumers: unhandled.join(", "),
            }
            .into());
        }
        let ready = all_of(std::mem::take(&mut self.readiness));
        if let Some(health) = self.health.take() {
            let services = self.service.serves;
            // Known and NOT_SERVING from the first call on, while the first
            // readiness check runs: a probe never hears "not registered".
            for service in services.iter().copied().chain([""]) {
                health
                    .set_service_status(service, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            self.tasks
                .spawn(health_follows(ready.clone(), health, services, self.shutdown.clone()));
        }
        let admin_shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            if let Err(e) = admin::serve(listeners.admin, ready, admin_shutdown.cancelled_owned()).await {
                tracing::error!(error = %e, "admin server failed");
            }
        });
        tracing::info!(service = self.service.name, addr = ?listeners.grpc.local_addr().ok(), "serving");
        let served = server(listeners.grpc, self.shutdown.clone()).await;
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        served
    }
}

/// How often gRPC health is brought in line with readiness.
const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Sets the gRPC health of `services` and of the server (`""`) from
/// `ready`, now and every [`HEALTH_EVERY`], until `shutdown`.
async fn health_follows(
    ready: ReadinessCheck,
    health: tonic_health::server::HealthReporter,
    services: &'static [&'static str],
    shutdown: CancellationToken,
) {
    loop {
        let status = match ready().await {
            Ok(()) => tonic_health::ServingStatus::Serving,
            Err(_) => tonic_health::ServingStatus::NotServing,
        };
        for service in services.iter().copied().chain([""]) {
            health.set_service_status(service, status).await;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(HEALTH_EVERY) => {}
        }
    }
}

/// How long one readiness check may take: a dependency that hangs (a
/// frozen database) is as unready as one that refuses, and a probe must
/// not hang with it.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Ready when every check is; otherwise names everything that is not.
fn all_of(checks: Vec<(&'static str, ReadinessCheck)>) -> ReadinessCheck {
    let checks: Arc<[(&'static str, ReadinessCheck)]> = checks.into();
    Arc::new(move || {
        let checks = checks.clone();
        Box::pin(async move {
            let mut problems = Vec::new();
            for (what, check) in checks.iter() {
                match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(problem)) => problems.push(problem),
                    Err(_) => problems.push(format!("{what} gave no answer within {CHECK_TIMEOUT:?}")),
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        })
    })
}
