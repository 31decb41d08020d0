//! One PostgreSQL server per test process, a fresh database per test.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::sync::OnceCell;

use crate::infra::{self, Purpose, ServerProcess};

/// Use this server (any database in the URL) instead of starting one.
pub(crate) const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

/// Attempts at starting a server when another process grabs the free port
/// between picking and binding it.
const PORT_ATTEMPTS: usize = 3;

/// The PostgreSQL server of this test process: started on first use, with
/// test-speed settings (no fsync, no synchronous commit), and stopped (its
/// directory deleted) when the process exits.
pub struct Postgres {
    /// The maintenance database, used to create the test databases.
    admin_url: String,
    /// Never dropped (it lives in a static): the watchdog stops the server
    /// when this process exits.
    _server: Option<ServerProcess>,
}

static SHARED: OnceCell<Postgres> = OnceCell::const_new();

/// A new, empty database on [`Postgres::shared`]; returns its URL,
/// `postgres://postgres@127.0.0.1:PORT/NAME`.
pub async fn fresh_database() -> anyhow::Result<String> {
    Postgres::shared().await?.fresh_database().await
}

impl Postgres {
    /// The server of this process: `TEST_DATABASE_URL` if set, otherwise one
    /// started in a temporary directory on a free port.
    pub async fn shared() -> anyhow::Result<&'static Postgres> {
        SHARED.get_or_try_init(Self::start).await
    }

    /// The URL of the maintenance database.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Creates a uniquely named, empty database and returns its URL. Names
    /// are unique across processes too, as `TEST_DATABASE_URL` may be shared;
    /// databases there are left behind for the server's owner to drop.
    pub async fn fresh_database(&self) -> anyhow::Result<String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = format!(
            "test_{millis}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        infra::create_database(&self.admin_url, &name).await?;
        Ok(infra::database_url(&self.admin_url, &name))
    }

    async fn start() -> anyhow::Result<Self> {
        if let Some(url) = std::env::var(TEST_DATABASE_URL).ok().filter(|url| !url.is_empty()) {
            return Ok(Self {
                admin_url: url,
                _server: None,
            });
        }
        let mut attempt = 1;
        loop {
            let dir = tempfile::Builder::new()
                .prefix("shop-test-postgres-")
                .tempdir()
                .context("creating a temporary directory")?;
            // Searchable by the `postgres` user, which runs the server when
            // the tests run as root.
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
            let data_dir = dir.path().join("data");
            // From here on the watchdog deletes the directory: it outlives
            // this static, which is never dropped.
            let dir = dir.keep();
            let port = infra::free_port();
            match infra::spawn_postgres(&data_dir, port, Purpose::Test, Some(&dir)).await {
                Ok(server) => {
                    return Ok(Self {
                        admin_url: infra::postgres_url(port),
                        _server: Some(server),
                    });
                }
                Err(e) if attempt < PORT_ATTEMPTS && infra::is_port_clash(&e) => {
                    fs::remove_dir_all(&dir).ok();
                    attempt += 1;
                }
                Err(e) => {
                    // The watchdog only deletes it if the server got started.
                    fs::remove_dir_all(&dir).ok();
                    return Err(e.context("starting the test PostgreSQL server"));
                }
            }
        }
    }
}
