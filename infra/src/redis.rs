//! A Redis server per test.

use std::path::PathBuf;

use anyhow::Context;
use tempfile::TempDir;

use crate::infra::{self, Purpose, ServerProcess};

/// Attempts at starting when another process grabs the free port first.
const PORT_ATTEMPTS: usize = 3;

/// A Redis server on a free port without persistence (`--save ""
/// --appendonly no`), so [`restart`](Self::restart) comes back empty, like
/// a cache that lost its memory. Dropping it stops the server.
pub struct RedisServer {
    // Declared first so that it is dropped, and the server stopped, before
    // the directory is deleted.
    process: Option<ServerProcess>,
    port: u16,
    dir: TempDir,
}

impl RedisServer {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("shop-test-redis-")
            .tempdir()
            .context("creating a temporary directory")?;
        let data = dir.path().join("data");
        let mut attempt = 1;
        loop {
            let port = infra::free_port();
            match infra::spawn_redis(&data, port, Purpose::Test).await {
                Ok(process) => {
                    return Ok(Self {
                        process: Some(process),
                        port,
                        dir,
                    });
                }
                Err(e) if attempt < PORT_ATTEMPTS && infra::is_port_clash(&e) => attempt += 1,
                Err(e) => return Err(e.context("starting a test redis-server")),
            }
        }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        infra::redis_url(self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (as in an outage). No-op if it is stopped already.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop().await;
        }
    }

    /// Stops the server if it runs, then starts it again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let process = infra::spawn_redis(&self.data_dir(), self.port, Purpose::Test)
            .await
            .context("restarting the test redis-server")?;
        self.process = Some(process);
        Ok(())
    }

    /// The server's log file (all starts).
    pub fn log_file(&self) -> PathBuf {
        self.data_dir().with_extension("log")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}
