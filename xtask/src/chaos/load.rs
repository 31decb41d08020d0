//! The customers of a fault run: checkouts through the gateway, as a
//! storefront makes them, for as long as the run lasts.
//!
//! Each worker plays a few customers and, from its own seeded generator,
//! places orders directly or through the cart, with every test card of the
//! emulator (approved, declined, charged with a lost answer, settled later
//! or declined later, and 3-D Secure: most customers authenticate, some
//! fail, some never do), buys the last units of the scarcest SKU, and
//! cancels some orders soon after placing them. A call that fails is tried again under the same
//! idempotency key, as a client should, and the failure is counted by its
//! gRPC code; the books, not the client's view, decide whether the run
//! kept its promises.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use shop_proto::cart::v1::{AddItemRequest, CheckoutRequest, cart_service_client::CartServiceClient};
use shop_proto::order::v1::{
    CancelOrderRequest, OrderLine, PlaceOrderRequest, order_service_client::OrderServiceClient,
};
use shop_runtime::CancellationToken;
use shop_runtime::upstream::Balanced;
use tonic::metadata::AsciiMetadataValue;

use crate::client::authorized;

/// SKUs with plenty of stock, and the one that sells out (10 on hand).
const PLENTY: &[&str] = &["SKU-MUG-001", "SKU-TEE-001", "SKU-CAP-001", "SKU-PEN-001"];
const SCARCE: &str = "SKU-BAG-001";
/// The emulator's test cards, by weight.
const METHODS: &[(&str, u32)] = &[
    ("pm_card_ok", 55),
    ("pm_card_declined", 12),
    ("pm_card_timeout", 11),
    ("pm_card_async", 8),
    ("pm_card_async_declined", 4),
    (THREE_D_SECURE, 10),
];
const THREE_D_SECURE: &str = "pm_card_3ds";
/// How long a 3-D Secure customer looks for the page before giving up.
const PAGE_PATIENCE: Duration = Duration::from_secs(30);
/// Attempts per call (the same idempotency key each time).
pub(crate) const ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Between one worker's checkouts; with the workers below, about ten
/// checkouts a second, within the gateway's per-customer order limit.
const PACE: Duration = Duration::from_millis(400);
pub(super) const WORKERS: usize = 4;
/// Failed calls described in full in a [`Tally`].
const FAILURES_KEPT: usize = 10;
pub(super) const CUSTOMERS_PER_WORKER: usize = 3;

/// What the customers saw.
#[derive(Default, Debug)]
pub(crate) struct Tally {
    pub accepted: u64,
    pub via_cart: u64,
    pub cancels_asked: u64,
    /// Calls that failed, by gRPC code (all attempts counted).
    pub failed_calls: BTreeMap<String, u64>,
    /// The first few failed calls: method, code and message.
    pub failures: Vec<String>,
    /// Refusals that are the service's answer (a cancellation too late), by
    /// gRPC code.
    pub answers: BTreeMap<String, u64>,
    /// Checkouts given up after every attempt failed.
    pub abandoned: u64,
    /// 3-D Secure customers who completed, failed, or never tried the
    /// authentication (`never` includes those whose page never came).
    pub authenticated: u64,
    pub authentication_failed: u64,
    pub never_authenticated: u64,
}

/// A customer, as the bearer token the gateway gave them.
#[derive(Clone)]
pub(crate) struct Customer {
    pub bearer: AsciiMetadataValue,
}

/// Every customer the workers play, named `<prefix>-<n>`, with a token
/// from the gateway's development auth on `channel`.
pub(crate) async fn customers(channel: &tonic::transport::Channel, prefix: &str) -> anyhow::Result<Vec<Customer>> {
    let mut customers = Vec::new();
    for n in 0..WORKERS * CUSTOMERS_PER_WORKER {
        let token = crate::client::issue_token(channel, &format!("{prefix}-{n}"), &["customer"]).await?;
        customers.push(Customer {
            bearer: format!("Bearer {token}").parse()?,
        });
    }
    Ok(customers)
}

/// Runs `WORKERS` workers until `stop`; each finishes the checkout it is
/// making. Their idempotency keys start with `run`: runs on the same
/// stack must name themselves apart.
pub(crate) async fn drive(
    channel: Balanced,
    customers: Vec<Customer>,
    run: &str,
    seed: u64,
    stop: CancellationToken,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers: Vec<_> = customers
        .chunks(CUSTOMERS_PER_WORKER)
        .enumerate()
        .map(|(n, customers)| {
            let worker = Worker {
                rng: StdRng::seed_from_u64(seed.wrapping_add(1 + n as u64)),
                orders: OrderServiceClient::new(channel.clone()),
                cart: CartServiceClient::new(channel.clone()),
                customers: customers.to_vec(),
                tally: tally.clone(),
                name: format!("{run}-w{n}"),
                authenticating: tokio::task::JoinSet::new(),
            };
            tokio::spawn(worker.run(stop.clone()))
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let mut tally = tally.lock().expect("no worker panicked holding the tally");
    std::mem::take(&mut *tally)
}

struct Worker {
    rng: StdRng,
    orders: OrderServiceClient<Balanced>,
    cart: CartServiceClient<Balanced>,
    customers: Vec<Customer>,
    tally: Arc<Mutex<Tally>>,
    name: String,
    /// 3-D Secure customers at the provider's page, in their own time.
    authenticating: tokio::task::JoinSet<()>,
}

impl Worker {
    async fn run(mut self, stop: CancellationToken) {
        let mut n = 0u64;
        while !stop.is_cancelled() {
            n += 1;
            let customer = self.customers[n as usize % self.customers.len()].clone();
            let key = format!("{}-{n}", self.name);
            let method = self.method();
            let order_id = match self.rng.random_range(0..100) {
                0..45 => {
                    let lines = self.lines(PLENTY);
                    self.place(&customer, &key, lines, method).await
                }
                45..60 => {
                    let lines = vec![line(SCARCE, self.rng.random_range(1..=2))];
                    self.place(&customer, &key, lines, method).await
                }
                _ => self.through_cart(&customer, &key, method).await,
            };
            if let Some(order_id) = &order_id
                && method == THREE_D_SECURE
            {
                self.authenticate_later(&customer, order_id);
            }
            if let Some(order_id) = order_id
                && self.rng.random_bool(0.15)
            {
                tokio::time::sleep(Duration::from_millis(self.rng.random_range(0..1000))).await;
                self.cancel(&customer, &order_id).await;
            }
            tokio::time::sleep(PACE).await;
        }
        while self.authenticating.join_next().await.is_some() {}
    }

    /// A 3-D Secure customer: waits for the order to show where to
    /// authenticate, reads the page a while, then completes (70 %), fails
    /// (15 %) or walks away (15 %), leaving the order to its deadline.
    fn authenticate_later(&mut self, customer: &Customer, order_id: &str) {
        let choice = self.rng.random_range(0..100);
        let reading = Duration::from_millis(self.rng.random_range(0..3000));
        let (orders, tally, customer, order_id) = (
            self.orders.clone(),
            self.tally.clone(),
            customer.clone(),
            order_id.to_owned(),
        );
        self.authenticating.spawn(async move {
            let count =
                |change: fn(&mut Tally)| change(&mut tally.lock().expect("no worker panicked holding the tally"));
            let page = match action_url(orders, &customer, &order_id).await {
                Some(page) if choice < 85 => page,
                _ => return count(|t| t.never_authenticated += 1),
            };
            tokio::time::sleep(reading).await;
            let (button, counted): (&str, fn(&mut Tally)) = match choice {
                0..70 => ("complete", |t| t.authenticated += 1),
                _ => ("fail", |t| t.authentication_failed += 1),
            };
            // The page's form posts to its own address; a failure here is
            // a customer who gave up, which the order's deadline settles.
            match reqwest::Client::new().post(format!("{page}/{button}")).send().await {
                Ok(_) => count(counted),
                Err(_) => count(|t| t.never_authenticated += 1),
            }
        });
    }

    fn method(&mut self) -> &'static str {
        let total: u32 = METHODS.iter().map(|(_, weight)| weight).sum();
        let mut pick = self.rng.random_range(0..total);
        for (method, weight) in METHODS {
            if pick < *weight {
                return method;
            }
            pick -= weight;
        }
        METHODS[0].0
    }

    fn lines(&mut self, skus: &[&str]) -> Vec<OrderLine> {
        let first = self.rng.random_range(0..skus.len());
        let mut lines = vec![line(skus[first], self.rng.random_range(1..=2))];
        if self.rng.random_bool(0.4) {
            let second = (first + 1 + self.rng.random_range(0..skus.len() - 1)) % skus.len();
            lines.push(line(skus[second], self.rng.random_range(1..=2)));
        }
        lines
    }

    async fn place(&mut self, customer: &Customer, key: &str, lines: Vec<OrderLine>, method: &str) -> Option<String> {
        let request = PlaceOrderRequest {
            idempotency_key: key.to_owned(),
            lines,
            payment_method: method.to_owned(),
        };
        let orders = self.orders.clone();
        let order = self
            .attempts("PlaceOrder", &[], || {
                let mut orders = orders.clone();
                let request = authorized(&customer.bearer, request.clone());
                async move { orders.place_order(request).await }
            })
            .await?;
        self.count(|t| t.accepted += 1);
        Some(order.order_id)
    }

    async fn through_cart(&mut self, customer: &Customer, key: &str, method: &str) -> Option<String> {
        for line in self.lines(PLENTY) {
            let request = AddItemRequest {
                sku: line.sku,
                quantity: line.quantity,
            };
            let cart = self.cart.clone();
            self.attempts("AddItem", &[], || {
                let mut cart = cart.clone();
                let request = authorized(&customer.bearer, request.clone());
                async move { cart.add_item(request).await }
            })
            .await?;
        }
        let request = CheckoutRequest {
            idempotency_key: key.to_owned(),
            payment_method: method.to_owned(),
        };
        let cart = self.cart.clone();
        let order = self
            .attempts("Checkout", &[], || {
                let mut cart = cart.clone();
                let request = authorized(&customer.bearer, request.clone());
                async move { cart.checkout(request).await }
            })
            .await?;
        self.count(|t| {
            t.accepted += 1;
            t.via_cart += 1;
        });
        Some(order.order_id)
    }

    async fn cancel(&mut self, customer: &Customer, order_id: &str) {
        self.count(|t| t.cancels_asked += 1);
        let request = CancelOrderRequest {
            order_id: order_id.to_owned(),
        };
        let orders = self.orders.clone();
        // FAILED_PRECONDITION (already settled) is an answer, not a failure.
        let _ = self
            .attempts("CancelOrder", &[tonic::Code::FailedPrecondition], || {
                let mut orders = orders.clone();
                let request = authorized(&customer.bearer, request.clone());
                async move { orders.cancel_order(request).await }
            })
            .await;
    }

    /// Up to `ATTEMPTS` calls while the answer is a failure worth retrying;
    /// statuses with a code in `answers` are the service's answer, not a
    /// failure.
    async fn attempts<T, F, Fut>(&mut self, method: &str, answers: &[tonic::Code], mut call: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        for _ in 0..ATTEMPTS {
            match call().await {
                Ok(response) => return Some(response.into_inner()),
                Err(status) if answers.contains(&status.code()) => {
                    let code = format!("{:?}", status.code());
                    self.count(|t| *t.answers.entry(code).or_default() += 1);
                    return None;
                }
                Err(status) => {
                    let code = format!("{:?}", status.code());
                    let failure = format!("{method}: {code} {:?}", status.message());
                    self.count(|t| {
                        *t.failed_calls.entry(code).or_default() += 1;
                        if t.failures.len() < FAILURES_KEPT {
                            t.failures.push(failure);
                        }
                    });
                    if !retryable(status.code()) {
                        return None;
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        self.count(|t| t.abandoned += 1);
        None
    }

    fn count(&self, change: impl FnOnce(&mut Tally)) {
        change(&mut self.tally.lock().expect("no worker panicked holding the tally"));
    }
}

/// Restocks the plentiful SKUs so they last a run of `seconds` (the scarce
/// one keeps its ten units, to be fought over), as an admin would.
pub(crate) async fn stock_up(channel: Balanced, admin: &AsciiMetadataValue, seconds: u64) -> anyhow::Result<()> {
    use shop_proto::inventory::v1::{RestockRequest, inventory_service_client::InventoryServiceClient};
    let mut inventory = InventoryServiceClient::new(channel);
    for sku in PLENTY {
        let request = RestockRequest {
            sku: (*sku).to_owned(),
            quantity: i64::try_from(seconds)?.saturating_mul(20),
        };
        inventory.restock(authorized(admin, request)).await?;
    }
    Ok(())
}

/// Where order `order_id`'s customer authenticates its payment, once the
/// order shows it (polled as a storefront watching it would); `None` if it
/// settles first or the page does not come within [`PAGE_PATIENCE`].
async fn action_url(orders: OrderServiceClient<Balanced>, customer: &Customer, order_id: &str) -> Option<String> {
    use shop_proto::order::v1::{GetOrderRequest, OrderStatus, PaymentWait};
    let deadline = tokio::time::Instant::now() + PAGE_PATIENCE;
    while tokio::time::Instant::now() < deadline {
        let request = GetOrderRequest {
            order_id: order_id.to_owned(),
        };
        if let Ok(order) = orders.clone().get_order(authorized(&customer.bearer, request)).await {
            let order = order.into_inner();
            if order.payment_wait == PaymentWait::CustomerAction as i32 && !order.next_action_url.is_empty() {
                return Some(order.next_action_url);
            }
            if order.status != OrderStatus::Pending as i32 && order.status != OrderStatus::Reserved as i32 {
                return None;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// Whether a client should try again: the server was away or busy.
fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
    )
}

fn line(sku: &str, quantity: i32) -> OrderLine {
    OrderLine {
        sku: sku.to_owned(),
        quantity,
        unit_price: None,
    }
}
