//! A nats-server with JetStream per test.

use std::path::PathBuf;

use anyhow::Context;
use tempfile::TempDir;

use crate::infra::{self, ServerProcess};

/// Attempts at starting when another process grabs the free port first.
const PORT_ATTEMPTS: usize = 3;

/// A nats-server with JetStream (the project's `nats/nats-server.conf`) on a
/// free port, its store in a temporary directory. Dropping it stops the
/// server and deletes the store.
pub struct NatsServer {
    // Declared first so that it is dropped, and the server stopped, before
    // the directory is deleted.
    process: Option<ServerProcess>,
    port: u16,
    dir: TempDir,
}

impl NatsServer {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("shop-test-nats-")
            .tempdir()
            .context("creating a temporary directory")?;
        let store = dir.path().join("store");
        let mut attempt = 1;
        loop {
            let port = infra::free_port();
            match infra::spawn_nats(&store, port).await {
                Ok(process) => {
                    return Ok(Self {
                        process: Some(process),
                        port,
                        dir,
                    });
                }
                Err(e) if attempt < PORT_ATTEMPTS && infra::is_port_clash(&e) => attempt += 1,
                Err(e) => return Err(e.context("starting a test nats-server")),
            }
        }
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        infra::nats_url(self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store, kept across [`stop`](Self::stop) and
    /// [`restart`](Self::restart).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Stops the server (as in an outage), keeping its store. No-op if it is
    /// stopped already.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop().await;
        }
    }

    /// Stops the server if it runs, then starts it again on the same port
    /// with the same store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let process = infra::spawn_nats(&self.store_dir(), self.port)
            .await
            .context("restarting the test nats-server")?;
        self.process = Some(process);
        Ok(())
    }

    /// The server's log file (all starts).
    pub fn log_file(&self) -> PathBuf {
        self.store_dir().with_extension("log")
    }
}
