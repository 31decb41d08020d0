//! svc-cart started with `run()` on a throwaway Redis, next to a running
//! `Stack` (its catalog and svc-order, its NATS for `orders.confirmed`).

use shop_infra::RedisServer;
use shop_runtime::{CancellationToken, Listeners, config::EnvReader};
use system_tests::{Service, Stack};
use tokio::task::JoinHandle;

pub(crate) struct CartServer {
    pub url: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), shop_runtime::host::HostError>>,
    // After the service in drop order: it stops before its Redis does.
    _redis: RedisServer,
}

impl CartServer {
    /// Starts svc-cart with `settings` over the stack's URLs and waits until
    /// it reports SERVING.
    pub(crate) async fn start(stack: &Stack, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let redis = RedisServer::start().await?;
        let mut env: Vec<(String, String)> = vec![
            ("REDIS_URL".into(), redis.url()),
            ("NATS_URL".into(), stack.nats.url()),
            ("CATALOG_URL".into(), stack.grpc_url(Service::Inventory)),
            ("ORDER_URL".into(), stack.grpc_url(Service::Order)),
        ];
        for (key, value) in settings {
            env.retain(|(k, _)| k != key);
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
        let config = svc_cart::Config::read(EnvReader::from_map(env))?;
        let listeners = Listeners::ephemeral().await?;
        let url = format!("http://{}", listeners.grpc.local_addr()?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(svc_cart::run(config, listeners, shutdown.clone()));
        system_tests::wait_serving(&url).await?;
        Ok(Self {
            url,
            shutdown,
            task,
            _redis: redis,
        })
    }

    /// Gateway upstream settings: the stack's services and this svc-cart.
    pub(crate) async fn upstreams(&self, stack: &Stack) -> Vec<(String, String)> {
        let mut settings = super::stack_upstreams(stack).await;
        settings.retain(|(key, _)| key != "CART_URL");
        settings.push(("CART_URL".into(), self.url.clone()));
        settings
    }
}

impl Drop for CartServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}
