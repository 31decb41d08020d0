//! The life every service shares: a [`Host`] supervises its background
//! tasks, serves the admin port with the readiness of the parts it was
//! given, serves gRPC, and on shutdown stops every task before returning.
//!
//! Shutdown (SIGTERM, or the token given to [`Host::new`]) drains in order,
//! all of it within `SHUTDOWN_GRACE_PERIOD`:
//!
//! 1. the service says it is going: `/readyz` answers 503 and gRPC health
//!    NOT_SERVING, so balancers (the gateway watches health) send new calls
//!    elsewhere; consumers stop taking messages and finish the ones they
//!    hold; calls are still served for a moment ([`DRAIN_DELAY`]) while
//!    callers notice;
//! 2. the gRPC server stops accepting and finishes the calls under way;
//!    long streams end with UNAVAILABLE ([`Host::stopping`]), and their
//!    clients watch again elsewhere;
//! 3. the relay publishes what the last calls and events committed, and
//!    the admin port closes.
//!
//! What the grace period cuts short is safe to cut: an unacknowledged event
//! is redelivered, an unpublished outbox row is sent by the next relay pass.
//!
//! The parts are optional and each adds its own readiness check:
//! [`Host::postgres`] (connect and migrate), [`Host::nats`] (connect and
//! ensure the streams) and, for what only one service has (svc-cart's
//! Redis, the gateway's signing keys), [`Host::ready_when`].
//!
//! ```ignore
//! let mut host = Host::new(&config.basics, shutdown);
//! let pool = host.postgres(&config.database, sqlx::migrate!("./migrations")).await?;
//! let bus = host.nats(&config.messaging).await?;
//! host.spawn_relay(&bus, &pool, &outbox);
//! host.spawn_consumer(&bus, saga::PAYMENTS_CONSUMER, handler).await?;
//! host.serve(router, listeners).await
//! ```

use std::{future::Future, sync::Arc, time::Duration};

use async_nats::jetstream;
use sqlx::{PgPool, migrate::Migrator};
use tokio::{net::TcpListener, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    Listeners, admin,
    admin::ReadinessCheck,
    config::{DatabaseSettings, MessagingSettings, ServiceBasics},
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

/// How long a draining service keeps serving after it said it is going,
/// so that callers who have not noticed yet are still answered (at most a
/// quarter of the grace period).
pub const DRAIN_DELAY: Duration = Duration::from_secs(1);

/// A service being started: its tasks, its readiness and its consumers.
pub struct Host {
    service: &'static ServiceSpec,
    grace: Duration,
    /// Cancelled when the service is to go (SIGTERM): step 1.
    shutdown: CancellationToken,
    /// Step 2: the gRPC server and its long streams.
    stopping: CancellationToken,
    /// Step 3: the relay and the admin port.
    finishing: CancellationToken,
    tasks: JoinSet<()>,
    finishers: JoinSet<()>,
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
    pub fn new(basics: &ServiceBasics, shutdown: CancellationToken) -> Self {
        let service = basics.service;
        // The recorder first: what the tasks record before the admin port
        // serves would otherwise be lost.
        admin::metrics_handle();
        crate::telemetry::ensure_installed(service);
        Self {
            service,
            grace: basics.shutdown_grace,
            shutdown,
            stopping: CancellationToken::new(),
            finishing: CancellationToken::new(),
            tasks: JoinSet::new(),
            finishers: JoinSet::new(),
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
        ensure_streams_patiently(&js, settings.stream_replicas).await?;
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

    /// Cancelled when the service is to go: background work stops taking
    /// new work (and finishes what it holds).
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Cancelled when the gRPC server stops, after [`DRAIN_DELAY`]: what
    /// would keep a call open (a WatchOrder stream) ends it now.
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Runs `task` until shutdown; it must watch [`Host::shutdown`] itself.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Publishes what `outbox` stages in `pool`.
    pub fn spawn_relay(&mut self, bus: &Bus, pool: &PgPool, outbox: &Outbox) {
        let relay = outbox.relay(pool.clone(), bus.js.clone(), bus.settings.outbox_poll_interval);
        // Last to go: it publishes what the final calls and events commit.
        self.finishers.spawn(relay.run(self.finishing.clone()));
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
            self.stopping.cancel();
            self.finishing.cancel();
            while self.tasks.join_next().await.is_some() {}
            while self.finishers.join_next().await.is_some() {}
            return Err(TopologyError::Unhandled {
                service: self.service.name,
                consumers: unhandled.join(", "),
            }
            .into());
        }
        let ready = draining_or(self.shutdown.clone(), all_of(std::mem::take(&mut self.readiness)));
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
        let admin_shutdown = self.finishing.clone();
        self.finishers.spawn(async move {
            if let Err(e) = admin::serve(listeners.admin, ready, admin_shutdown.cancelled_owned()).await {
                tracing::error!(error = %e, "admin server failed");
            }
        });
        tracing::info!(service = self.service.name, addr = ?listeners.grpc.local_addr().ok(), "serving");
        let server = server(listeners.grpc, self.stopping.clone());
        tokio::pin!(server);
        let ended_by_itself = tokio::select! {
            served = &mut server => Some(served),
            () = self.shutdown.cancelled() => None,
        };
        // However it began, everything stops now, within the grace period.
        let deadline = Instant::now() + self.grace;
        self.shutdown.cancel();
        let served = match ended_by_itself {
            Some(served) => served,
            None => {
                tracing::info!(grace = ?self.grace, "draining: no longer ready; finishing calls and events");
                tokio::time::sleep(DRAIN_DELAY.min(self.grace / 4)).await;
                self.stopping.cancel();
                tokio::time::timeout_at(deadline, server).await.unwrap_or_else(|_| {
                    tracing::warn!("calls still open at the end of the grace period; closing them");
                    Ok(())
                })
            }
        };
        self.stopping.cancel();
        if !join_until(&mut self.tasks, deadline).await {
            tracing::warn!("event handlers still busy at the end of the grace period; they will be redelivered");
        }
        self.finishing.cancel();
        if !join_until(&mut self.finishers, deadline).await {
            tracing::warn!(
                "the relay was still publishing at the end of the grace period; the next pass sends the rest"
            );
        }
        tracing::info!(service = self.service.name, "stopped");
        served
    }
}

/// Waits for every task of `tasks` until `deadline`, then aborts what is
/// left. Whether all of them ended in time.
async fn join_until(tasks: &mut JoinSet<()>, deadline: Instant) -> bool {
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline, all).await.is_ok() {
        return true;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    false
}

/// `ready`, except that a service that is going is not.
fn draining_or(shutdown: CancellationToken, ready: ReadinessCheck) -> ReadinessCheck {
    Arc::new(move || {
        if shutdown.is_cancelled() {
            Box::pin(async { Err("shutting down".to_owned()) })
        } else {
            ready()
        }
    })
}

/// How long a starting service waits for JetStream to take its streams: a
/// cluster that is starting elects its leaders first (seconds).
const JETSTREAM_PATIENCE: Duration = Duration::from_secs(60);

async fn ensure_streams_patiently(js: &jetstream::Context, replicas: usize) -> Result<(), TopologyError> {
    let deadline = Instant::now() + JETSTREAM_PATIENCE;
    loop {
        match topology::ensure_streams(js, replicas).await {
            Err(e @ TopologyError::JetStream { .. }) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "JetStream is not taking the streams yet (a cluster still electing?); trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            done => return done,
        }
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
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(HEALTH_EVERY) => {}
        }
    }
    // Going: said at once, not at the next check.
    for service in services.iter().copied().chain([""]) {
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
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
