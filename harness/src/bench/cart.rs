//! The cart workload, measured straight on svc-cart and through the
//! gateway: AddItem (a catalog lookup on svc-inventory plus one Redis
//! script), GetCart (one Redis MULTI) and UpdateItem (one Redis script).

use std::time::{Duration, Instant};

use shop_proto::cart::v1::{
    AddItemRequest, ClearCartRequest, GetCartRequest, UpdateItemRequest, cart_service_client::CartServiceClient,
};
use tonic::{
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use super::{Errors, Latencies, Table, ms};

/// A cart client whose calls carry who is calling (`I`).
pub type CartClient<I> = CartServiceClient<InterceptedService<Channel, I>>;

/// The catalog's seeded products.
pub const SKUS: [&str; 5] = [
    "SKU-MUG-001",
    "SKU-TEE-001",
    "SKU-CAP-001",
    "SKU-BAG-001",
    "SKU-PEN-001",
];

/// AddItem adds a unit per call; a worker empties its cart (untimed) after
/// this many adds (spread over the five SKUs), so long runs stay under the
/// `CART_MAX_QUANTITY` the benchmarks set.
const ADDS_BEFORE_CLEAR: usize = 5_000;

/// The `CART_MAX_QUANTITY` a cart benchmark runs svc-cart with.
pub const MAX_QUANTITY: &str = "10000";

#[derive(Debug, Clone, Copy)]
pub enum Op {
    AddItem,
    GetCart,
    UpdateItem,
}

impl Op {
    /// In the order a run takes them: AddItem fills the carts the others use.
    pub const ALL: [Op; 3] = [Op::AddItem, Op::GetCart, Op::UpdateItem];
}

/// Call `i` of a worker doing `op`.
pub async fn call<I: Interceptor>(client: &mut CartClient<I>, op: Op, i: usize) -> Result<(), tonic::Status> {
    let sku = SKUS[i % SKUS.len()].to_owned();
    match op {
        Op::AddItem => {
            if i > 0 && i.is_multiple_of(ADDS_BEFORE_CLEAR) {
                client.clear_cart(ClearCartRequest {}).await?;
            }
            client.add_item(AddItemRequest { sku, quantity: 1 }).await.map(drop)
        }
        Op::GetCart => client.get_cart(GetCartRequest {}).await.map(drop),
        Op::UpdateItem => client
            .update_item(UpdateItemRequest {
                sku,
                quantity: i32::try_from(i % 10).unwrap_or(0) + 1,
            })
            .await
            .map(drop),
    }
}

/// Puts every SKU in every client's cart (untimed), so UpdateItem always
/// finds its line.
pub async fn fill<I: Interceptor + Clone>(clients: &[CartClient<I>]) -> anyhow::Result<()> {
    for client in clients {
        for sku in SKUS {
            client
                .clone()
                .add_item(AddItemRequest {
                    sku: sku.to_owned(),
                    quantity: 1,
                })
                .await?;
        }
    }
    Ok(())
}

/// What one row measured.
pub struct Cell {
    pub latencies: Latencies,
    pub errors: Errors,
    pub elapsed: Duration,
}

impl Cell {
    /// The table a cart benchmark prints, one row per [`Cell::row`].
    pub fn table() -> Table {
        Table::new(&[
            "operation",
            "concurrency",
            "calls",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
        ])
    }

    pub fn row(&self, op: Op, concurrency: u64) -> Vec<String> {
        vec![
            format!("{op:?}"),
            concurrency.to_string(),
            self.latencies.count().to_string(),
            format!("{:.0}", self.latencies.count() as f64 / self.elapsed.as_secs_f64()),
            ms(self.latencies.ms_at(0.5)),
            ms(self.latencies.ms_at(0.99)),
            ms(self.latencies.max_ms()),
            self.errors.to_string(),
        ]
    }
}

/// Runs `op` from every client at once for `duration`.
pub async fn run<I>(clients: &[CartClient<I>], op: Op, duration: Duration) -> anyhow::Result<Cell>
where
    I: Interceptor + Clone + Send + Sync + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for client in clients {
        let mut client = client.clone();
        workers.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Latencies::default(), Errors::default());
            let mut i = 0usize;
            while Instant::now() < deadline {
                let call_started = Instant::now();
                match call(&mut client, op, i).await {
                    Ok(()) => latencies.record(call_started.elapsed()),
                    Err(status) => errors.record(&status),
                }
                i += 1;
            }
            (latencies, errors)
        }));
    }
    let mut cell = Cell {
        latencies: Latencies::default(),
        errors: Errors::default(),
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        let (latencies, errors) = worker.await?;
        cell.latencies.merge(&latencies);
        cell.errors.merge(&errors);
    }
    cell.elapsed = started.elapsed();
    Ok(cell)
}
