//! The common life of a service with a database and events: connect,
//! migrate, ensure the streams, run background tasks (outbox relay,
//! consumers, sweepers), serve gRPC and the admin port, and on shutdown stop
//! everything before returning.

use std::{future::Future, sync::Arc};

use async_nats::jetstream;
use sqlx::{PgPool, migrate::Migrator};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    Listeners, admin,
    config::MessagingSettings,
    consumer::{self, EventHandler},
    db, grpc,
    outbox::Outbox,
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

/// A running service's shared connections and background tasks.
pub struct Host {
    pub name: &'static str,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    settings: MessagingSettings,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Host {
    /// Connects to Postgres and NATS, applies the messaging and the
    /// service's migrations, and ensures the streams.
    pub async fn start(
        name: &'static str,
        settings: &MessagingSettings,
        migrations: Migrator,
        shutdown: CancellationToken,
    ) -> Result<Self, HostError> {
        let pool = db::connect(
            settings.database_url.expose(),
            settings.database_max_connections,
            settings.database_limits,
        )
        .await?;
        db::migrate(&pool, migrations).await?;
        let (nats, js) = crate::nats::connect(settings.nats_url.expose(), name).await?;
        topology::ensure_streams(&js).await?;
        Ok(Self {
            name,
            pool,
            nats,
            js,
            settings: settings.clone(),
            shutdown,
            tasks: JoinSet::new(),
        })
    }

    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs `task` until shutdown; it must watch [`Host::shutdown`] itself.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Publishes what `outbox` stages.
    pub fn spawn_relay(&mut self, outbox: &Outbox) {
        let relay = outbox.relay(self.pool.clone(), self.js.clone(), self.settings.outbox_poll_interval);
        self.tasks.spawn(relay.run(self.shutdown.clone()));
    }

    /// Ensures the durable consumer declared as `name` in `nats/consumers`
    /// and hands its messages to `handler`.
    pub async fn spawn_consumer<H: EventHandler>(&mut self, name: &str, handler: H) -> Result<(), HostError> {
        let definition = topology::ensure_consumers(&self.js, &[name]).await?.remove(0);
        self.tasks.spawn(consumer::run(
            self.js.clone(),
            definition,
            Arc::new(handler),
            self.settings.consumer_concurrency,
            self.shutdown.clone(),
        ));
        Ok(())
    }

    /// Serves the admin port (readiness: Postgres and NATS) and `router` on
    /// the gRPC port until shutdown, then stops every task and returns.
    pub async fn serve(mut self, router: grpc::ServiceRouter, listeners: Listeners) -> Result<(), HostError> {
        let ready = admin::database_and_nats_check(self.pool.clone(), self.nats.clone());
        let admin_shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            if let Err(e) = admin::serve(listeners.admin, ready, admin_shutdown.cancelled_owned()).await {
                tracing::error!(error = %e, "admin server failed");
            }
        });
        tracing::info!(service = self.name, addr = ?listeners.grpc.local_addr().ok(), "serving");
        let served = grpc::serve(router, listeners.grpc, self.shutdown.clone().cancelled_owned()).await;
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        Ok(served?)
    }
}
