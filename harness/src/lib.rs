//! The whole platform on throwaway servers, for the tests and benchmarks of
//! every crate: the services running for real against their own
//! nats-server (JetStream), fresh PostgreSQL databases and, for svc-cart, a
//! Redis, either in this process ([`Stack`]) or as separate processes of the
//! built binaries ([`processes`]). Each stack has its own servers, so tests
//! never share state.
//!
//! A stack runs the four saga services unless told otherwise
//! ([`StackOptions::with`] adds svc-cart or the gateway); every service it
//! runs gets the URLs of the others, and a service it does not run is a URL
//! where nothing listens. Every stack runs the payment provider emulator
//! ([`provider`]), which svc-payment charges through. [`bench`](mod@bench)
//! is what the benchmarks share.

pub mod bench;
pub mod processes;
pub mod provider;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use shop_infra::{NatsServer, RedisServer, fresh_database};
use shop_proto::{
    inventory::v1::{GetStockRequest, Stock, inventory_service_client::InventoryServiceClient},
    notify::v1::notification_service_client::NotificationServiceClient,
    order::v1::{GetOrderRequest, Order, OrderStatus, order_service_client::OrderServiceClient},
    payment::v1::payment_service_client::PaymentServiceClient,
};
use shop_runtime::{
    CancellationToken, Listeners,
    config::EnvReader,
    entry::{EntryError, serve_from_env},
    identity::{self, IDENTITY_HEADER, IdentityIssuer, UserId},
    registry::{self, ServiceSpec},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::{
    GrpcMethod, Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// A service of the platform, as tests name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Order,
    Inventory,
    Payment,
    Notify,
    Cart,
    Gateway,
}

/// Runs `$body` with `$config` and `$run` naming the service's `Config` and
/// `run`: the one list of how each service is configured and started.
macro_rules! with_service {
    ($service:expr, $config:ident, $run:ident => $body:expr) => {
        match $service {
            Service::Order => {
                use svc_order::{Config as $config, run as $run};
                $body
            }
            Service::Inventory => {
                use svc_inventory::{Config as $config, run as $run};
                $body
            }
            Service::Payment => {
                use svc_payment::{Config as $config, run as $run};
                $body
            }
            Service::Notify => {
                use svc_notify::{Config as $config, run as $run};
                $body
            }
            Service::Cart => {
                use svc_cart::{Config as $config, run as $run};
                $body
            }
            Service::Gateway => {
                use svc_gateway::{Config as $config, run as $run};
                $body
            }
        }
    };
}

impl Service {
    /// Every service, in the registry's start order.
    pub const ALL: [Service; 6] = [
        Service::Inventory,
        Service::Payment,
        Service::Order,
        Service::Notify,
        Service::Cart,
        Service::Gateway,
    ];
    /// The services of the checkout saga: what a stack runs by default.
    pub const SAGA: [Service; 4] = [Service::Inventory, Service::Order, Service::Payment, Service::Notify];

    /// Its entry in the platform's registry.
    pub fn spec(self) -> &'static ServiceSpec {
        match self {
            Service::Order => &registry::ORDER,
            Service::Inventory => &registry::INVENTORY,
            Service::Payment => &registry::PAYMENT,
            Service::Notify => &registry::NOTIFY,
            Service::Cart => &registry::CART,
            Service::Gateway => &registry::GATEWAY,
        }
    }

    pub fn of(spec: &ServiceSpec) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.spec() == spec)
    }

    /// Reads the service's configuration from `env` and runs it on
    /// `listeners` in a task of its own until `shutdown`.
    pub fn launch(
        self,
        env: EnvReader,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
        with_service!(self, Config, run => {
            let config = Config::read(env)?;
            Ok(tokio::spawn(async move { Ok(run(config, listeners, shutdown).await?) }))
        })
    }

    /// Runs the service as its own binary does (`shop_runtime::entry`).
    pub async fn serve_from_env(self) -> Result<(), EntryError> {
        with_service!(self, Config, run => serve_from_env(Config::from_env, run).await)
    }
}

/// Knobs a test may turn.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub reservation_ttl: Duration,
    pub sweep_interval: Duration,
    /// Services not started at first (start them with [`Stack::start_service`]).
    pub held_back: Vec<Service>,
    /// svc-order's `ORDER_DEADLINE`.
    pub order_deadline: Duration,
    /// The services the stack runs ([`Service::SAGA`] unless [`with`](Self::with)).
    pub services: Vec<Service>,
    /// Settings of one service over the stack's own, as `(service, name, value)`.
    pub settings: Vec<(Service, String, String)>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            reservation_ttl: Duration::from_secs(15 * 60),
            sweep_interval: Duration::from_millis(200),
            held_back: vec![],
            order_deadline: Duration::from_secs(30 * 60),
            services: Service::SAGA.to_vec(),
            settings: vec![],
        }
    }
}

impl StackOptions {
    /// Runs `service` too (svc-cart, the gateway).
    pub fn with(mut self, service: Service) -> Self {
        if !self.services.contains(&service) {
            self.services.push(service);
        }
        self
    }

    /// The services the stack runs, in start order.
    pub fn in_start_order(&self) -> Vec<Service> {
        Service::ALL.into_iter().filter(|s| self.services.contains(s)).collect()
    }

    /// Sets `name` for `service`, over what the stack would give it.
    pub fn setting(mut self, service: Service, name: &str, value: impl Into<String>) -> Self {
        self.settings.push((service, name.to_owned(), value.into()));
        self
    }
}

/// The database URL of each service that has one.
#[derive(Debug, Clone)]
pub struct Databases {
    pub order: String,
    pub inventory: String,
    pub payment: String,
    pub notify: String,
}

impl Databases {
    pub async fn fresh() -> anyhow::Result<Self> {
        Ok(Self {
            order: fresh_database().await?,
            inventory: fresh_database().await?,
            payment: fresh_database().await?,
            notify: fresh_database().await?,
        })
    }

    pub fn of(&self, service: Service) -> Option<&str> {
        match service {
            Service::Order => Some(&self.order),
            Service::Inventory => Some(&self.inventory),
            Service::Payment => Some(&self.payment),
            Service::Notify => Some(&self.notify),
            Service::Cart | Service::Gateway => None,
        }
    }
}

/// Where a stack's servers and services are, as its services are told.
pub struct Surroundings<'a> {
    pub nats_url: &'a str,
    pub redis_url: Option<&'a str>,
    pub databases: &'a Databases,
    /// The gRPC URL of every service the stack runs.
    pub urls: &'a HashMap<Service, String>,
    pub options: &'a StackOptions,
    pub data_dir: &'a std::path::Path,
    /// The payment provider svc-payment charges through.
    pub provider: &'a provider::Emulator,
}

impl Surroundings<'_> {
    /// Every URL variable of the registry: the service's URL where the stack
    /// runs it, otherwise a port nothing listens on.
    pub fn url_settings(&self) -> Vec<(String, String)> {
        registry::ALL
            .iter()
            .flat_map(|spec| {
                let url = Service::of(spec)
                    .and_then(|service| self.urls.get(&service).cloned())
                    .unwrap_or_else(dead_url);
                spec.url_vars.iter().map(move |var| ((*var).to_owned(), url.clone()))
            })
            .collect()
    }

    /// The settings `service` gets (plus its listen addresses, which the
    /// caller gives).
    pub fn settings(&self, service: Service) -> Vec<(String, String)> {
        let millis = |d: Duration| format!("{}ms", d.as_millis());
        let mut settings = self.url_settings();
        settings.extend([
            ("NATS_URL".to_owned(), self.nats_url.to_owned()),
            ("OUTBOX_POLL_INTERVAL".to_owned(), "500ms".to_owned()),
        ]);
        let keys = identity_keys();
        settings.push(match service {
            Service::Gateway => (identity::SIGNING_KEY_FILE.into(), keys.signing.display().to_string()),
            _ => (
                identity::VERIFYING_KEY_FILE.into(),
                keys.verifying.display().to_string(),
            ),
        });
        if let Some(database) = self.databases.of(service) {
            settings.push(("DATABASE_URL".into(), database.to_owned()));
            settings.push(("DATABASE_MAX_CONNECTIONS".into(), "8".into()));
        }
        let options = self.options;
        settings.extend(
            match service {
                Service::Order => vec![
                    ("ORDER_DEADLINE", millis(options.order_deadline)),
                    ("ORDER_DEADLINE_SWEEP_INTERVAL", "200ms".into()),
                ],
                Service::Inventory => vec![
                    ("RESERVATION_TTL", millis(options.reservation_ttl)),
                    ("RESERVATION_SWEEP_INTERVAL", millis(options.sweep_interval)),
                ],
                Service::Payment => {
                    let mut payment = vec![("PAYMENT_PROVIDER_TIMEOUT", "2s".to_owned())];
                    payment.extend(self.provider.payment_settings());
                    payment
                }
                Service::Notify => vec![("NOTIFY_DATA_DIR", self.data_dir.display().to_string())],
                Service::Cart => vec![("REDIS_URL", self.redis_url.unwrap_or_default().to_owned())],
                Service::Gateway => vec![("UPSTREAM_HEALTH_INTERVAL", "200ms".into())],
            }
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
        );
        for (_, name, value) in options.settings.iter().filter(|(s, _, _)| *s == service) {
            settings.retain(|(k, _)| k != name);
            settings.push((name.clone(), value.clone()));
        }
        settings
    }
}

/// A URL where nothing listens (a port just given back).
pub fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    format!("http://127.0.0.1:{port}")
}

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    admin: SocketAddr,
}

/// The platform in this process.
pub struct Stack {
    pub nats: NatsServer,
    /// svc-cart's, when the stack runs it.
    pub redis: Option<RedisServer>,
    pub databases: Databases,
    pub options: StackOptions,
    pub data_dir: tempfile::TempDir,
    /// The payment provider emulator svc-payment charges through.
    pub provider: provider::Emulator,
    ports: HashMap<Service, u16>,
    urls: HashMap<Service, String>,
    nats_url: String,
    redis_url: String,
    /// Each service's first listener, bound when the stack starts and kept
    /// until the service starts: a port given up and bound again later could
    /// be taken meanwhile by a server another test starts.
    reserved: HashMap<Service, TcpListener>,
    running: HashMap<Service, Running>,
}

impl Stack {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let redis = match options.services.contains(&Service::Cart) {
            true => Some(RedisServer::start().await?),
            false => None,
        };
        let databases = Databases::fresh().await?;
        let services = options.in_start_order();
        let (mut ports, mut urls, mut reserved) = (HashMap::new(), HashMap::new(), HashMap::new());
        for &service in &services {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            ports.insert(service, listener.local_addr()?.port());
            urls.insert(service, format!("http://{}", listener.local_addr()?));
            // A held-back service is down: its port refuses connections
            // until it starts.
            if !options.held_back.contains(&service) {
                reserved.insert(service, listener);
            }
        }
        let data_dir = tempfile::Builder::new().prefix("shop-stack-").tempdir()?;
        let provider = provider::Emulator::start(&provider::Placement::new(
            data_dir.path().join("payment-provider"),
            ports.get(&Service::Gateway).map(|port| format!("127.0.0.1:{port}")),
        ))
        .await?;
        let mut stack = Self {
            nats_url: nats.url(),
            redis_url: redis.as_ref().map(RedisServer::url).unwrap_or_default(),
            nats,
            redis,
            databases,
            data_dir,
            provider,
            ports,
            urls,
            reserved,
            running: HashMap::new(),
            options,
        };
        for service in services {
            if !stack.options.held_back.contains(&service) {
                stack.start_service(service).await?;
            }
        }
        Ok(stack)
    }

    pub fn grpc_addr(&self, service: Service) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[&service]))
    }

    pub fn grpc_url(&self, service: Service) -> String {
        format!("http://{}", self.grpc_addr(service))
    }

    /// The admin port of a running service.
    pub fn admin_addr(&self, service: Service) -> Option<SocketAddr> {
        self.running.get(&service).map(|r| r.admin)
    }

    /// `(status code, body)` of `GET path` on a running service's admin port.
    pub async fn admin_get(&self, service: Service, path: &str) -> anyhow::Result<(u16, String)> {
        shop_infra::http_get(self.admin_addr(service).context("service not running")?, path).await
    }

    /// What its services are told about it.
    pub fn surroundings(&self) -> Surroundings<'_> {
        Surroundings {
            nats_url: &self.nats_url,
            redis_url: self.redis.as_ref().map(|_| self.redis_url.as_str()),
            databases: &self.databases,
            urls: &self.urls,
            options: &self.options,
            data_dir: self.data_dir.path(),
            provider: &self.provider,
        }
    }

    /// The settings `service` gets in this stack.
    pub fn settings(&self, service: Service) -> Vec<(String, String)> {
        self.surroundings().settings(service)
    }

    /// Every URL variable, as the stack's services get them (for a service
    /// a test starts by itself, e.g. a gateway with its own keys).
    pub fn url_settings(&self) -> Vec<(String, String)> {
        self.surroundings().url_settings()
    }

    /// Starts `service` on its port (the same one after a restart) and waits
    /// until it reports SERVING.
    pub async fn start_service(&mut self, service: Service) -> anyhow::Result<()> {
        if self.running.contains_key(&service) {
            bail!("{service:?} is already running");
        }
        let env = EnvReader::from_map(self.settings(service));
        let listeners = Listeners {
            grpc: match self.reserved.remove(&service) {
                Some(listener) => listener,
                // Held back, or a restart: the port was given up meanwhile.
                None => bind_retrying(self.grpc_addr(service)).await?,
            },
            admin: TcpListener::bind("127.0.0.1:0").await?,
        };
        let admin = listeners.admin.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = service.launch(env, listeners, shutdown.clone())?;
        self.running.insert(service, Running { shutdown, task, admin });
        wait_serving(&self.grpc_url(service))
            .await
            .with_context(|| format!("{service:?} did not become ready"))
    }

    /// Starts one more svc-order replica (same database and broker) on a new
    /// port; it runs until the returned token is cancelled.
    pub async fn order_replica(&self) -> anyhow::Result<(String, CancellationToken)> {
        self.order_replica_with(&[]).await
    }

    /// [`order_replica`](Self::order_replica) with extra settings.
    pub async fn order_replica_with(&self, extra: &[(&str, &str)]) -> anyhow::Result<(String, CancellationToken)> {
        let mut settings = self.settings(Service::Order);
        settings.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let listeners = Listeners::ephemeral().await?;
        let url = format!("http://{}", listeners.grpc.local_addr()?);
        let shutdown = CancellationToken::new();
        Service::Order.launch(EnvReader::from_map(settings), listeners, shutdown.clone())?;
        wait_serving(&url).await?;
        Ok((url, shutdown))
    }

    /// Stops `service` the way a crash would look to the others: it stops
    /// consuming and publishing; committed work stays in its database.
    pub async fn stop_service(&mut self, service: Service) -> anyhow::Result<()> {
        let running = self.running.remove(&service).context("service not running")?;
        running.shutdown.cancel();
        running.task.abort();
        let _ = running.task.await;
        Ok(())
    }

    pub async fn channel(&self, service: Service) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(self.grpc_url(service))?.connect().await?)
    }

    pub async fn orders(&self, user: &str) -> anyhow::Result<OrderServiceClient<InterceptedService<Channel, AsUser>>> {
        Ok(OrderServiceClient::with_interceptor(
            self.channel(Service::Order).await?,
            AsUser::customer(user),
        ))
    }

    pub async fn inventory(
        &self,
        user: AsUser,
    ) -> anyhow::Result<InventoryServiceClient<InterceptedService<Channel, AsUser>>> {
        Ok(InventoryServiceClient::with_interceptor(
            self.channel(Service::Inventory).await?,
            user,
        ))
    }

    pub async fn payments(
        &self,
        user: &str,
    ) -> anyhow::Result<PaymentServiceClient<InterceptedService<Channel, AsUser>>> {
        Ok(PaymentServiceClient::with_interceptor(
            self.channel(Service::Payment).await?,
            AsUser::customer(user),
        ))
    }

    pub async fn notifications(
        &self,
        user: &str,
    ) -> anyhow::Result<NotificationServiceClient<InterceptedService<Channel, AsUser>>> {
        Ok(NotificationServiceClient::with_interceptor(
            self.channel(Service::Notify).await?,
            AsUser::customer(user),
        ))
    }

    pub async fn stock(&self, sku: &str) -> anyhow::Result<Stock> {
        let mut client = self.inventory(AsUser::customer("stock-reader")).await?;
        Ok(client
            .get_stock(GetStockRequest { sku: sku.into() })
            .await?
            .into_inner())
    }

    pub async fn pool(&self, service: Service) -> anyhow::Result<sqlx::PgPool> {
        let url = self.databases.of(service).context("a service without a database")?;
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await?)
    }

    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(async_nats::connect(self.nats.url()).await?))
    }

    /// Polls GetOrder until the order is terminal (CONFIRMED or CANCELLED).
    pub async fn settled(&self, user: &str, order_id: &str) -> anyhow::Result<Order> {
        self.wait_for_order(user, order_id, |o| {
            o.status == OrderStatus::Confirmed as i32 || o.status == OrderStatus::Cancelled as i32
        })
        .await
    }

    /// Polls GetOrder (bounded) until `done` holds.
    pub async fn wait_for_order(
        &self,
        user: &str,
        order_id: &str,
        done: impl Fn(&Order) -> bool,
    ) -> anyhow::Result<Order> {
        let mut client = self.orders(user).await?;
        let mut last = None;
        for _ in 0..1500 {
            let order = client
                .get_order(GetOrderRequest {
                    order_id: order_id.into(),
                })
                .await?
                .into_inner();
            if done(&order) {
                return Ok(order);
            }
            last = Some(order);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("order {order_id} did not reach the expected state; last seen {last:?}")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.shutdown.cancel();
            running.task.abort();
        }
    }
}

/// Binds `addr`, retrying briefly while a previous listener's socket closes.
async fn bind_retrying(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last.map_or_else(|| anyhow::anyhow!("bind {addr}"), anyhow::Error::from))
}

/// Waits (bounded) until the gRPC health service at `url` says SERVING.
pub async fn wait_serving(url: &str) -> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let mut last_error = String::from("never answered");
    for _ in 0..600 {
        if let Ok(channel) = Channel::from_shared(url.to_owned())?.connect().await {
            match HealthClient::new(channel)
                .check(HealthCheckRequest { service: String::new() })
                .await
            {
                Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => return Ok(()),
                Ok(r) => last_error = format!("status {}", r.get_ref().status),
                Err(e) => last_error = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} not serving: {last_error}")
}

/// Sets the identity metadata the gateway would set.
/// The identity key pair every stack of this process uses: the gateway
/// signs with it, the services verify with it, and [`AsUser`] stands in for
/// the gateway when a test calls a service directly.
pub struct IdentityKeys {
    pub signing: std::path::PathBuf,
    pub verifying: std::path::PathBuf,
    pub issuer: IdentityIssuer,
}

pub fn identity_keys() -> &'static IdentityKeys {
    static KEYS: std::sync::OnceLock<IdentityKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let files = identity::throwaway_keys();
        IdentityKeys {
            signing: files.signing.clone(),
            verifying: files.verifying.clone(),
            issuer: IdentityIssuer::from_file(&files.signing).expect("reading the test identity key"),
        }
    })
}

/// Calls a service directly as `user` with `roles`, vouched for the way the
/// gateway would: each call carries an identity token for its own method.
#[derive(Clone)]
pub struct AsUser {
    user: UserId,
    roles: Vec<String>,
}

impl AsUser {
    pub fn new(user: &str, roles: &str) -> Self {
        Self {
            user: UserId::parse(user).expect("a valid test user id"),
            roles: roles.split(',').map(|r| r.trim().to_owned()).collect(),
        }
    }

    pub fn customer(user: &str) -> Self {
        Self::new(user, "customer")
    }

    pub fn admin(user: &str) -> Self {
        Self::new(user, "admin")
    }

    /// The token for a call of `path` (`/package.Service/Method`), good
    /// also for what the contract says that method calls on the caller's
    /// behalf, as the gateway's would be.
    pub fn token(&self, path: &str) -> String {
        static CONTRACT: std::sync::OnceLock<svc_gateway::access::AccessTable> = std::sync::OnceLock::new();
        let contract =
            CONTRACT.get_or_init(|| svc_gateway::access::AccessTable::shop().expect("the contract's descriptors"));
        identity_keys()
            .issuer
            .issue(&self.user, &self.roles, &contract.vouched_paths(path))
    }
}

impl Interceptor for AsUser {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        // tonic's generated clients name the method being called.
        let method = request
            .extensions()
            .get::<GrpcMethod>()
            .map(|m| format!("/{}/{}", m.service(), m.method()))
            .ok_or_else(|| Status::internal("AsUser needs a generated client (no GrpcMethod)"))?;
        let token = MetadataValue::try_from(self.token(&method)).map_err(|_| Status::internal("token"))?;
        request.metadata_mut().insert(IDENTITY_HEADER, token);
        Ok(request)
    }
}

/// Polls `check` (bounded, ~20 s) until it returns `Some`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let mut last_error = None;
    for _ in 0..1000 {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("timed out waiting for {what} (last error: {last_error:?})")
}

/// Waits until every durable consumer has acknowledged everything in its
/// stream, so "nothing else happened" can be asserted.
pub async fn wait_consumers_idle(js: &async_nats::jetstream::Context) -> anyhow::Result<()> {
    eventually("consumers to drain", || async {
        let backlogs = shop_runtime::topology::backlogs(js).await?;
        Ok(backlogs.iter().all(|b| b.is_idle()).then_some(()))
    })
    .await
}

/// An order line as a client sends it.
pub fn line(sku: &str, quantity: i32) -> shop_proto::order::v1::OrderLine {
    shop_proto::order::v1::OrderLine {
        sku: sku.into(),
        quantity,
        unit_price: None,
    }
}
