//! A nats-server, a Redis or a PostgreSQL per caller: a real process on a
//! free port, its data in a temporary directory, stopped and restarted on
//! the same port and data to simulate an outage and the recovery from it.
//! (Most tests share one PostgreSQL per process, [`crate::fresh_database`];
//! a test that stops the database needs one of its own.)

use std::{future::Future, marker::PhantomData, os::unix::fs::PermissionsExt, path::Path, path::PathBuf};

use anyhow::Context;
use tempfile::TempDir;

use crate::infra::{self, Purpose, ServerProcess};

/// Attempts at starting when another process grabs the free port first.
const PORT_ATTEMPTS: usize = 3;

/// What differs between the servers: the program and how it is started.
pub trait Kind {
    /// The program, for messages: `nats-server`.
    const PROGRAM: &'static str;
    /// The data directory's name inside the temporary directory.
    const DATA: &'static str;
    fn spawn(data: PathBuf, port: u16) -> impl Future<Output = anyhow::Result<ServerProcess>> + Send;
    /// Readies the temporary directory before the first start.
    fn prepare(_dir: &Path) -> anyhow::Result<()> {
        Ok(())
    }
}

/// nats-server with JetStream (the project's `nats/nats-server.conf`).
pub enum Nats {}

impl Kind for Nats {
    const PROGRAM: &'static str = "nats-server";
    const DATA: &'static str = "store";
    async fn spawn(data: PathBuf, port: u16) -> anyhow::Result<ServerProcess> {
        infra::spawn_nats(&data, port).await
    }
}

/// redis-server without persistence (`--save "" --appendonly no`), so a
/// restart comes back empty, like a cache that lost its memory.
pub enum Redis {}

impl Kind for Redis {
    const PROGRAM: &'static str = "redis-server";
    const DATA: &'static str = "data";
    async fn spawn(data: PathBuf, port: u16) -> anyhow::Result<ServerProcess> {
        infra::spawn_redis(&data, port, Purpose::Test).await
    }
}

/// PostgreSQL with test settings, all to itself.
pub enum Pg {}

impl Kind for Pg {
    const PROGRAM: &'static str = "postgres";
    const DATA: &'static str = "data";
    async fn spawn(data: PathBuf, port: u16) -> anyhow::Result<ServerProcess> {
        infra::spawn_postgres(&data, port, Purpose::Test, None).await
    }
    /// Searchable by the `postgres` user, which runs the server when the
    /// tests run as root.
    fn prepare(dir: &Path) -> anyhow::Result<()> {
        Ok(std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?)
    }
}

/// A server of kind `K` for one caller. Dropping it stops the server and
/// deletes its data.
pub struct Server<K: Kind> {
    // Declared first so that it is dropped, and the server stopped, before
    // the directory is deleted.
    process: Option<ServerProcess>,
    port: u16,
    dir: TempDir,
    kind: PhantomData<K>,
}

/// A nats-server with JetStream on a free port, its store in a temporary
/// directory.
pub type NatsServer = Server<Nats>;

/// A Redis server on a free port, without persistence.
pub type RedisServer = Server<Redis>;

/// A PostgreSQL server of one test's own, for a test that stops it.
pub type PostgresServer = Server<Pg>;

impl<K: Kind> Server<K> {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("shop-test-{}-", K::PROGRAM))
            .tempdir()
            .context("creating a temporary directory")?;
        K::prepare(dir.path())?;
        let mut attempt = 1;
        loop {
            let port = infra::free_port();
            match K::spawn(dir.path().join(K::DATA), port).await {
                Ok(process) => {
                    return Ok(Self {
                        process: Some(process),
                        port,
                        dir,
                        kind: PhantomData,
                    });
                }
                Err(e) if attempt < PORT_ATTEMPTS && infra::is_port_clash(&e) => attempt += 1,
                Err(e) => return Err(e.context(format!("starting a test {}", K::PROGRAM))),
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data, kept across [`stop`](Self::stop) and
    /// [`restart`](Self::restart) (nats-server's JetStream store).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join(K::DATA)
    }

    /// The server's log file (all starts).
    pub fn log_file(&self) -> PathBuf {
        self.data_dir().with_extension("log")
    }

    /// Stops the server (as in an outage), keeping its data. No-op if it is
    /// stopped already.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop().await;
        }
    }

    /// Stops the server if it runs, then starts it again on the same port
    /// with the same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let process = K::spawn(self.data_dir(), self.port)
            .await
            .with_context(|| format!("restarting the test {}", K::PROGRAM))?;
        self.process = Some(process);
        Ok(())
    }
}

impl Server<Nats> {
    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        infra::nats_url(self.port)
    }
}

impl Server<Pg> {
    /// The maintenance database, `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        infra::postgres_url(self.port)
    }
}

impl Server<Redis> {
    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        infra::redis_url(self.port)
    }
}

/// Three clustered nats-servers on free ports (`nats/cluster/`), their
/// stores in a temporary directory: for what must survive the loss of a
/// node.
pub struct NatsCluster {
    nodes: [infra::ClusterPorts; 3],
    processes: [Option<ServerProcess>; 3],
    dir: TempDir,
}

impl NatsCluster {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("shop-test-nats-cluster-")
            .tempdir()
            .context("creating a temporary directory")?;
        let nodes = std::array::from_fn(|_| infra::ClusterPorts {
            port: infra::free_port(),
            route_port: infra::free_port(),
        });
        let mut cluster = Self {
            nodes,
            processes: [None, None, None],
            dir,
        };
        // Together: each waits for the others before its JetStream is up.
        let (one, two, three) = (cluster.store(1), cluster.store(2), cluster.store(3));
        let started = tokio::join!(
            infra::start_nats_node(1, &nodes, &one),
            infra::start_nats_node(2, &nodes, &two),
            infra::start_nats_node(3, &nodes, &three),
        );
        let started = [started.0, started.1, started.2];
        for (slot, process) in cluster.processes.iter_mut().zip(started) {
            *slot = Some(process.context("starting a test nats-server cluster")?);
        }
        Ok(cluster)
    }

    fn store(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("n{node}"))
    }

    /// Every node, comma-separated, as `NATS_URL` takes them.
    pub fn url(&self) -> String {
        infra::nats_cluster_url(&self.nodes)
    }

    /// The client port of node `node` (1-3).
    pub fn port(&self, node: usize) -> u16 {
        self.nodes[node - 1].port
    }

    /// Stops node `node` (1-3), keeping its store.
    pub async fn stop(&mut self, node: usize) {
        if let Some(mut process) = self.processes[node - 1].take() {
            process.stop().await;
        }
    }

    /// Starts node `node` (1-3) again with its store.
    pub async fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        self.stop(node).await;
        let process = infra::start_nats_node(node, &self.nodes, &self.store(node)).await?;
        self.processes[node - 1] = Some(process);
        Ok(())
    }
}
