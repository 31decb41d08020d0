//! End-to-end harness: svc-order, svc-inventory, svc-payment and svc-notify
//! running for real against a throwaway nats-server (JetStream) and fresh
//! PostgreSQL databases, either in this process ([`Stack`]) or as separate
//! processes of the built binaries ([`processes`]). Each test gets its own
//! broker and databases, so tests never share state.

pub mod processes;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use shop_infra::{NatsServer, fresh_database};
use shop_proto::{
    inventory::v1::{GetStockRequest, Stock, inventory_service_client::InventoryServiceClient},
    notify::v1::notification_service_client::NotificationServiceClient,
    order::v1::{GetOrderRequest, Order, OrderStatus, order_service_client::OrderServiceClient},
    payment::v1::payment_service_client::PaymentServiceClient,
};
use shop_runtime::{CancellationToken, Listeners, config::EnvReader};
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// The services of the checkout saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Order,
    Inventory,
    Payment,
    Notify,
}

impl Service {
    pub const ALL: [Service; 4] = [Service::Inventory, Service::Order, Service::Payment, Service::Notify];

    /// Its entry in the platform's registry.
    pub fn spec(self) -> &'static shop_runtime::registry::ServiceSpec {
        use shop_runtime::registry;
        match self {
            Service::Order => &registry::ORDER,
            Service::Inventory => &registry::INVENTORY,
            Service::Payment => &registry::PAYMENT,
            Service::Notify => &registry::NOTIFY,
        }
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
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            reservation_ttl: Duration::from_secs(15 * 60),
            sweep_interval: Duration::from_millis(200),
            held_back: vec![],
            order_deadline: Duration::from_secs(30 * 60),
        }
    }
}

/// The database URL of each service.
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

    pub fn of(&self, service: Service) -> &str {
        match service {
            Service::Order => &self.order,
            Service::Inventory => &self.inventory,
            Service::Payment => &self.payment,
            Service::Notify => &self.notify,
        }
    }
}

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), shop_runtime::host::HostError>>,
}

/// The four saga services in this process.
pub struct Stack {
    pub nats: NatsServer,
    pub databases: Databases,
    pub options: StackOptions,
    pub data_dir: tempfile::TempDir,
    ports: HashMap<Service, u16>,
    /// Each service's first listener, bound when the stack starts and kept
    /// until the service starts: a port given up and bound again later could
    /// be taken meanwhile by a server another test starts.
    reserved: HashMap<Service, TcpListener>,
    running: HashMap<Service, Running>,
}

/// The settings each service gets in tests (plus `GRPC_LISTEN_ADDR`,
/// unused because the listener is passed in).
pub fn service_settings(
    service: Service,
    nats_url: &str,
    databases: &Databases,
    inventory_url: &str,
    options: &StackOptions,
    data_dir: &std::path::Path,
) -> Vec<(String, String)> {
    let mut settings = vec![
        ("NATS_URL".to_owned(), nats_url.to_owned()),
        ("DATABASE_URL".to_owned(), databases.of(service).to_owned()),
        ("DATABASE_MAX_CONNECTIONS".to_owned(), "8".to_owned()),
        ("OUTBOX_POLL_INTERVAL".to_owned(), "500ms".to_owned()),
    ];
    match service {
        Service::Order => {
            settings.push(("CATALOG_URL".into(), inventory_url.to_owned()));
            settings.push((
                "ORDER_DEADLINE".into(),
                format!("{}ms", options.order_deadline.as_millis()),
            ));
            settings.push(("ORDER_DEADLINE_SWEEP_INTERVAL".into(), "200ms".into()));
        }
        Service::Inventory => {
            settings.push((
                "RESERVATION_TTL".into(),
                format!("{}ms", options.reservation_ttl.as_millis()),
            ));
            settings.push((
                "RESERVATION_SWEEP_INTERVAL".into(),
                format!("{}ms", options.sweep_interval.as_millis()),
            ));
        }
        Service::Payment => settings.push(("PAYMENT_PROVIDER_TIMEOUT".into(), "2s".into())),
        Service::Notify => settings.push(("NOTIFY_DATA_DIR".into(), data_dir.display().to_string())),
    }
    settings
}

impl Stack {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let databases = Databases::fresh().await?;
        let mut stack = Self {
            nats,
            databases,
            data_dir: tempfile::Builder::new().prefix("shop-stack-").tempdir()?,
            ports: HashMap::new(),
            reserved: HashMap::new(),
            running: HashMap::new(),
            options,
        };
        for service in Service::ALL {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            stack.ports.insert(service, listener.local_addr()?.port());
            // A held-back service is down: its port refuses connections
            // until it starts.
            if !stack.options.held_back.contains(&service) {
                stack.reserved.insert(service, listener);
            }
        }
        for service in Service::ALL {
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

    /// Starts `service` on its port (the same one after a restart) and waits
    /// until it reports SERVING.
    pub async fn start_service(&mut self, service: Service) -> anyhow::Result<()> {
        if self.running.contains_key(&service) {
            bail!("{service:?} is already running");
        }
        let settings = service_settings(
            service,
            &self.nats.url(),
            &self.databases,
            &self.grpc_url(Service::Inventory),
            &self.options,
            self.data_dir.path(),
        );
        let env = EnvReader::from_map(settings);
        let listeners = Listeners {
            grpc: match self.reserved.remove(&service) {
                Some(listener) => listener,
                // Held back, or a restart: the port was given up meanwhile.
                None => bind_retrying(self.grpc_addr(service)).await?,
            },
            admin: TcpListener::bind("127.0.0.1:0").await?,
        };
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = match service {
            Service::Order => {
                let config = svc_order::Config::read(env)?;
                tokio::spawn(svc_order::run(config, listeners, token))
            }
            Service::Inventory => {
                let config = svc_inventory::Config::read(env)?;
                tokio::spawn(svc_inventory::run(config, listeners, token))
            }
            Service::Payment => {
                let config = svc_payment::Config::read(env)?;
                tokio::spawn(svc_payment::run(config, listeners, token))
            }
            Service::Notify => {
                let config = svc_notify::Config::read(env)?;
                tokio::spawn(svc_notify::run(config, listeners, token))
            }
        };
        self.running.insert(service, Running { shutdown, task });
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
        let mut settings = service_settings(
            Service::Order,
            &self.nats.url(),
            &self.databases,
            &self.grpc_url(Service::Inventory),
            &self.options,
            self.data_dir.path(),
        );
        settings.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let listeners = Listeners::ephemeral().await?;
        let url = format!("http://{}", listeners.grpc.local_addr()?);
        let shutdown = CancellationToken::new();
        tokio::spawn(svc_order::run(
            svc_order::Config::read(EnvReader::from_map(settings))?,
            listeners,
            shutdown.clone(),
        ));
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
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(self.databases.of(service))
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
#[derive(Clone)]
pub struct AsUser {
    user: AsciiMetadataValue,
    roles: AsciiMetadataValue,
}

impl AsUser {
    pub fn new(user: &str, roles: &str) -> Self {
        Self {
            user: MetadataValue::try_from(user).unwrap_or_else(|_| MetadataValue::from_static("invalid")),
            roles: MetadataValue::try_from(roles).unwrap_or_else(|_| MetadataValue::from_static("customer")),
        }
    }

    pub fn customer(user: &str) -> Self {
        Self::new(user, "customer")
    }

    pub fn admin(user: &str) -> Self {
        Self::new(user, "admin")
    }
}

impl Interceptor for AsUser {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("x-user-id", self.user.clone());
        request.metadata_mut().insert("x-user-roles", self.roles.clone());
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
