//! The payment provider emulator of a stack (`shop-provider`): in this
//! process ([`Emulator::start`]) or as a process of its own
//! ([`Emulator::spawn`]), on a free port, its journal in the stack's
//! directory, its webhooks signed with a secret made for the stack and sent
//! to the stack's gateway when it runs one. [`Emulator::alone`] is one
//! without a stack, for the tests of one part.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use shop_provider::{Faults, admin_client::AdminClient, domain::LedgerLine};
use shop_runtime::{
    CancellationToken, config::EnvReader, registry::PAYMENT_WEBHOOKS_PATH, webhook_secret::WebhookSecret,
};
use tokio::{net::TcpListener, process::Command, task::JoinHandle};

/// How long `processing` lasts and a refund stays `pending` in a test
/// stack: long enough to be seen, short enough not to hold a test up.
pub const ASYNC_DELAY: Duration = Duration::from_secs(1);

/// How often svc-payment reads the provider's events in a test stack.
pub const RECONCILE_INTERVAL: &str = "500ms";

/// How long a provider just started may take to answer.
const STARTUP: Duration = Duration::from_secs(30);

/// A running emulator; it stops when dropped.
pub struct Emulator {
    admin: AdminClient,
    secret: WebhookSecret,
    running: Running,
    /// Its data directory, when it has one of its own.
    _data: Option<tempfile::TempDir>,
}

enum Running {
    Task {
        shutdown: CancellationToken,
        task: JoinHandle<Result<(), shop_provider::Error>>,
    },
    /// Killed when dropped.
    Process { _child: tokio::process::Child },
}

/// Where an emulator keeps its journal and sends its webhooks.
#[derive(Debug, Clone)]
pub struct Placement {
    pub data_dir: PathBuf,
    /// The gateway's address (`127.0.0.1:port`) when the stack runs one:
    /// webhooks go to its `/webhooks/payments`. None: no webhooks.
    pub gateway: Option<String>,
    /// `PROVIDER_ASYNC_DELAY` ([`ASYNC_DELAY`] in a stack).
    pub async_delay: Duration,
}

impl Placement {
    /// Its journal in `data_dir`, webhooks to `gateway` if any.
    pub fn new(data_dir: PathBuf, gateway: Option<String>) -> Self {
        Self {
            data_dir,
            gateway,
            async_delay: ASYNC_DELAY,
        }
    }

    /// The `PROVIDER_*` settings of an emulator listening on `listen`, signing
    /// with `secret`: the one list, whether it runs in this process or not.
    fn settings(&self, listen: &str, secret: &WebhookSecret) -> Vec<(&'static str, String)> {
        let mut settings = vec![
            ("PROVIDER_LISTEN_ADDR", listen.to_owned()),
            ("PROVIDER_DATA_DIR", self.data_dir.display().to_string()),
            ("PROVIDER_ASYNC_DELAY", format!("{}ms", self.async_delay.as_millis())),
            // Quick retries: the gateway may start after the first event.
            ("PROVIDER_WEBHOOK_RETRY", "250ms".to_owned()),
        ];
        if let Some(gateway) = &self.gateway {
            settings.extend([
                (
                    "PROVIDER_WEBHOOK_URL",
                    format!("http://{gateway}{PAYMENT_WEBHOOKS_PATH}"),
                ),
                ("PROVIDER_WEBHOOK_SECRET", secret.expose().to_owned()),
            ]);
        }
        settings
    }
}

impl Emulator {
    /// In this process, on a free port.
    pub async fn start(placement: &Placement) -> anyhow::Result<Self> {
        Self::start_keeping(placement, None).await
    }

    /// [`start`](Self::start), keeping `data` until it stops.
    async fn start_keeping(placement: &Placement, data: Option<tempfile::TempDir>) -> anyhow::Result<Self> {
        let secret = WebhookSecret::generate();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let config = shop_provider::Config::read(EnvReader::from_map(placement.settings(&addr, &secret)))?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(shop_provider::run(config, listener, shutdown.clone()));
        let emulator = Self {
            admin: AdminClient::new(format!("http://{addr}")),
            secret,
            running: Running::Task { shutdown, task },
            _data: data,
        };
        emulator.admin.wait_live(STARTUP).await?;
        Ok(emulator)
    }

    /// As a process of its own: `binary payment-provider` (the test binary
    /// `shop-service`), its output appended to `log`.
    pub async fn spawn(binary: &Path, placement: &Placement, log: &Path) -> anyhow::Result<Self> {
        let secret = WebhookSecret::generate();
        let addr = format!("127.0.0.1:{}", shop_infra::free_port());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = Command::new(binary)
            .arg(shop_provider::SERVICE.name)
            .env("RUST_LOG", "warn")
            .envs(placement.settings(&addr, &secret))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {} {}", binary.display(), shop_provider::SERVICE.name))?;
        let emulator = Self {
            admin: AdminClient::new(format!("http://{addr}")),
            secret,
            running: Running::Process { _child: child },
            _data: None,
        };
        emulator.admin.wait_live(STARTUP).await?;
        Ok(emulator)
    }

    /// In this process, in a directory of its own (removed when it stops),
    /// without webhooks; `processing` and pending refunds last
    /// `async_delay`.
    pub async fn alone(async_delay: Duration) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new().prefix("payment-provider-").tempdir()?;
        let mut placement = Placement::new(data.path().to_owned(), None);
        placement.async_delay = async_delay;
        Self::start_keeping(&placement, Some(data)).await
    }

    /// Its base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        self.admin.url()
    }

    /// Its `/admin` API.
    pub fn admin(&self) -> &AdminClient {
        &self.admin
    }

    /// The secret it signs webhooks with, which svc-payment is given.
    pub fn webhook_secret(&self) -> &WebhookSecret {
        &self.secret
    }

    /// Sets every fault knob (`Faults::default()`: all off).
    pub async fn set_faults(&self, faults: &Faults) -> anyhow::Result<()> {
        self.admin.set_faults(faults).await?;
        Ok(())
    }

    /// Where each intent's money is, oldest first.
    pub async fn ledger(&self) -> anyhow::Result<Vec<LedgerLine>> {
        Ok(self.admin.ledger().await?)
    }

    /// The ledger lines of the intents made for `order_id`.
    pub async fn lines_of(&self, order_id: &str) -> anyhow::Result<Vec<LedgerLine>> {
        let mut ledger = self.ledger().await?;
        ledger.retain(|line| line.order_id.as_deref() == Some(order_id));
        Ok(ledger)
    }

    /// What svc-payment is told to charge through it.
    pub fn payment_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PAYMENT_PROVIDER_URL", self.url().to_owned()),
            ("PAYMENT_WEBHOOK_SECRET", self.secret.expose().to_owned()),
            ("PAYMENT_RECONCILE_INTERVAL", RECONCILE_INTERVAL.to_owned()),
        ]
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Task { shutdown, task } => {
                shutdown.cancel();
                task.abort();
            }
            Running::Process { .. } => {}
        }
    }
}
