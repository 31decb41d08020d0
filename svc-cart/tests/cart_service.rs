//! svc-cart end to end: the service on a real Redis, next to the real
//! checkout saga (svc-order, svc-inventory, svc-payment, svc-notify on real
//! NATS and PostgreSQL).

use std::{
    fmt::Debug,
    future::Future,
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, jetstream::message::PublishMessage};
use bytes::Bytes;
use shop_harness::{AsUser, Service, Stack, StackOptions, eventually, line, wait_consumers_idle};
use shop_infra::{
    RedisServer,
    fault_proxy::{Fault, FaultProxy},
};
use shop_proto::{
    cart::v1::{
        AddItemRequest, Cart, CheckoutRequest, ClearCartRequest, GetCartRequest, RemoveItemRequest, UpdateItemRequest,
        cart_service_client::CartServiceClient,
    },
    order::v1::{CancelReason, Order, OrderStatus, PlaceOrderRequest},
};
use tonic::{Code, Status, service::interceptor::InterceptedService, transport::Channel};
use uuid::Uuid;

type TestResult = anyhow::Result<()>;
type CartClient = CartServiceClient<InterceptedService<Channel, AsUser>>;

const MUG: &str = "SKU-MUG-001"; // 12.99 EUR
const TEE: &str = "SKU-TEE-001"; // 24.99 EUR
const PEN: &str = "SKU-PEN-001"; // 8.99 EUR
const CAP: &str = "SKU-CAP-001"; // 18.99 EUR
const POSTER: &str = "SKU-POSTER-001"; // none in stock

/// svc-cart's deadline on its calls to svc-order in [`Shop::start_unanswered`].
const CART_DEADLINE: &str = "1s";
/// How late svc-order's replies reach svc-cart there: past the deadline.
const LATE: Duration = Duration::from_secs(3);

/// svc-cart on its own Redis, beside the saga services.
struct Shop {
    stack: Stack,
}

impl Shop {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Starts with extra settings for svc-cart (e.g. `CART_TTL`).
    async fn start_with(settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let options = settings
            .iter()
            .fold(StackOptions::default().with(Service::Cart), |options, (k, v)| {
                options.setting(Service::Cart, k, *v)
            });
        Ok(Self {
            stack: Stack::start_with(options).await?,
        })
    }

    /// svc-cart reaching svc-order through a fault proxy, with a
    /// [`CART_DEADLINE`] on its calls: with [`Fault::LateReplies`] of
    /// [`LATE`], svc-order places the order while svc-cart gives up on it.
    async fn start_unanswered() -> anyhow::Result<(Self, FaultProxy)> {
        let mut options = StackOptions::default().with(Service::Cart);
        options.held_back.push(Service::Cart);
        let mut stack = Stack::start_with(options).await?;
        let link = FaultProxy::start(stack.grpc_addr(Service::Order))?;
        stack.options = stack
            .options
            .clone()
            .setting(Service::Cart, "ORDER_URL", format!("http://{}", link.addr()))
            .setting(Service::Cart, "UPSTREAM_TIMEOUT", CART_DEADLINE);
        stack.start_service(Service::Cart).await?;
        Ok((Self { stack }, link))
    }

    /// A checkout whose PlaceOrder places the order but whose answer comes
    /// after svc-cart's deadline: it fails UNAVAILABLE. Returns the order
    /// svc-order placed.
    async fn checkout_unanswered(&self, link: &FaultProxy, cart: &mut CartClient, key: &str) -> anyhow::Result<Order> {
        link.set(Fault::LateReplies(LATE));
        let status = checkout(cart, key, "pm_card_ok")
            .await
            .expect_err("svc-cart's deadline passes before the answer");
        link.set(Fault::None);
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        // The replies held on the link drain before the next call through it.
        tokio::time::sleep(LATE).await;
        let orders = self.orders_of("alice").await?;
        let [placed] = orders.as_slice() else {
            anyhow::bail!("expected the one order placed, got {orders:?}");
        };
        Ok(placed.clone())
    }

    /// `user`'s orders in svc-order, newest first.
    async fn orders_of(&self, user: &str) -> anyhow::Result<Vec<Order>> {
        let mut orders = self.stack.orders(user).await?;
        let request = shop_proto::order::v1::ListOrdersRequest {
            page_size: 10,
            page_token: String::new(),
        };
        Ok(orders.list_orders(request).await?.into_inner().orders)
    }

    async fn cart(&self, user: &str) -> anyhow::Result<CartClient> {
        self.cart_as(AsUser::customer(user)).await
    }

    /// `user`'s cart after adding `(sku, quantity)` lines to it, in order.
    async fn cart_holding(&self, user: &str, lines: &[(&str, i32)]) -> anyhow::Result<CartClient> {
        let mut cart = self.cart(user).await?;
        for (sku, quantity) in lines {
            add(&mut cart, sku, *quantity).await?;
        }
        Ok(cart)
    }

    async fn cart_as(&self, user: AsUser) -> anyhow::Result<CartClient> {
        let channel = self.stack.channel(Service::Cart).await?;
        Ok(CartServiceClient::with_interceptor(channel, user))
    }

    /// Checks out `user`'s cart and waits until the saga has settled the
    /// order (CONFIRMED or CANCELLED).
    async fn checkout_settled(&self, cart: &mut CartClient, user: &str, key: &str, pm: &str) -> anyhow::Result<Order> {
        let order = checkout(cart, key, pm).await?;
        self.stack.settled(user, &order.order_id).await
    }

    fn redis_server(&mut self) -> &mut RedisServer {
        self.stack.redis.as_mut().expect("a stack with svc-cart has its Redis")
    }

    async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let url = self.stack.redis.as_ref().map(RedisServer::url).unwrap_or_default();
        Ok(redis::Client::open(url)?.get_multiplexed_async_connection().await?)
    }

    async fn pttl(&self, key: &str) -> anyhow::Result<i64> {
        let mut redis = self.redis().await?;
        Ok(redis::cmd("PTTL").arg(key).query_async(&mut redis).await?)
    }

    /// `(status code, body)` of an admin endpoint.
    async fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.stack.admin_get(Service::Cart, path).await
    }
}

async fn add(cart: &mut CartClient, sku: &str, quantity: i32) -> Result<Cart, Status> {
    let sku = sku.into();
    Ok(cart.add_item(AddItemRequest { sku, quantity }).await?.into_inner())
}

async fn update(cart: &mut CartClient, sku: &str, quantity: i32) -> Result<Cart, Status> {
    let sku = sku.into();
    Ok(cart
        .update_item(UpdateItemRequest { sku, quantity })
        .await?
        .into_inner())
}

async fn remove(cart: &mut CartClient, sku: &str) -> Result<Cart, Status> {
    let sku = sku.into();
    Ok(cart.remove_item(RemoveItemRequest { sku }).await?.into_inner())
}

async fn get(cart: &mut CartClient) -> anyhow::Result<Cart> {
    Ok(cart.get_cart(GetCartRequest {}).await?.into_inner())
}

async fn checkout(cart: &mut CartClient, key: &str, payment_method: &str) -> Result<Order, Status> {
    cart.checkout(CheckoutRequest {
        idempotency_key: key.into(),
        payment_method: payment_method.into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// `(sku, quantity)` of every line, in the cart's order.
fn lines(cart: &Cart) -> Vec<(String, i32)> {
    cart.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect()
}

fn total(cart: &Cart) -> Option<(String, i64)> {
    cart.total.as_ref().map(|m| (m.currency_code.clone(), m.amount_minor))
}

#[track_caller]
fn expect_field(status: &Status, code: Code, field: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "the message names {field}: {:?}",
        status.message()
    );
}

/// Expects the call refused as INVALID_ARGUMENT naming `field`; `why` says
/// what was wrong with the request.
#[track_caller]
fn expect_invalid<T: Debug>(result: Result<T, Status>, why: &str, field: &str) {
    expect_field(&result.expect_err(why), Code::InvalidArgument, field);
}

/// `times` concurrent AddItem calls of `quantity` units of `sku`.
async fn add_concurrently(
    cart: &CartClient,
    sku: &'static str,
    quantity: i32,
    times: usize,
) -> anyhow::Result<Vec<Result<Cart, Status>>> {
    let adds: Vec<_> = (0..times)
        .map(|_| {
            let mut cart = cart.clone();
            tokio::spawn(async move { add(&mut cart, sku, quantity).await })
        })
        .collect();
    let mut results = Vec::new();
    for result in futures::future::join_all(adds).await {
        results.push(result?);
    }
    Ok(results)
}

/// Retries `call` (bounded) while it answers UNAVAILABLE, as a client would
/// while the service behind it comes back.
async fn once_available<T, F, Fut>(what: &str, call: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    eventually(what, || {
        let answer = call();
        async move {
            match answer.await {
                Ok(value) => Ok(Some(value)),
                Err(status) if status.code() == Code::Unavailable => Ok(None),
                Err(status) => Err(status.into()),
            }
        }
    })
    .await
}

/// Polls the cart (bounded) until `done` holds.
async fn cart_becomes(cart: &CartClient, what: &str, done: impl Fn(&Cart) -> bool) -> anyhow::Result<Cart> {
    eventually(what, || {
        let mut cart = cart.clone();
        let done = &done;
        async move {
            let now = get(&mut cart).await?;
            Ok(done(&now).then_some(now))
        }
    })
    .await
}

async fn cart_empties(cart: &CartClient) -> anyhow::Result<Cart> {
    cart_becomes(cart, "the cart to empty", |c| c.lines.is_empty()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_update_remove_and_clear_keep_lines_and_totals_right() -> TestResult {
    let shop = Shop::start().await?;
    let mut cart = shop.cart("alice").await?;

    let empty = get(&mut cart).await?;
    assert!(empty.lines.is_empty());
    assert_eq!(
        (empty.total, empty.expires_at),
        (None, None),
        "no cart, no total, no expiry"
    );

    add(&mut cart, TEE, 1).await?;
    add(&mut cart, MUG, 2).await?;
    let now = add(&mut cart, MUG, 1).await?;
    assert_eq!(
        lines(&now),
        [(MUG.into(), 3), (TEE.into(), 1)],
        "adds sum up; lines by SKU"
    );
    assert_eq!(now.lines[0].name, "Enamel mug", "name snapshot from the catalog");
    assert_eq!(now.lines[0].unit_price.as_ref().map(|m| m.amount_minor), Some(1299));
    assert_eq!(total(&now), Some(("EUR".into(), 3 * 1299 + 2499)));
    let expires_at = now.expires_at.expect("a cart with lines expires");
    let in_3_days = chrono::Utc::now().timestamp() + 3 * 24 * 3600;
    assert!(
        (expires_at.seconds - in_3_days).abs() < 60,
        "expires_at is now + CART_TTL"
    );

    let now = update(&mut cart, MUG, 5).await?;
    assert_eq!(
        lines(&now),
        [(MUG.into(), 5), (TEE.into(), 1)],
        "update sets the quantity"
    );
    assert_eq!(total(&now), Some(("EUR".into(), 5 * 1299 + 2499)));

    let now = remove(&mut cart, TEE).await?;
    assert_eq!(lines(&now), [(MUG.into(), 5)]);
    assert_eq!(total(&now), Some(("EUR".into(), 5 * 1299)));
    let again = remove(&mut cart, TEE).await?;
    assert_eq!(lines(&again), lines(&now), "removing what is not there is harmless");

    let cleared = cart.clear_cart(ClearCartRequest {}).await?.into_inner();
    assert!(cleared.lines.is_empty() && cleared.total.is_none());
    assert!(get(&mut cart).await?.lines.is_empty());
    assert_eq!(shop.pttl("cart:{alice}").await?, -2, "an empty cart has no key");

    add(&mut cart, PEN, 1).await?;
    let now = remove(&mut cart, PEN).await?;
    assert!(now.lines.is_empty() && now.expires_at.is_none());
    assert_eq!(
        shop.pttl("cart:{alice}").await?,
        -2,
        "removing the last line removes the key"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_of_one_sku_sum_exactly_and_respect_the_limit() -> TestResult {
    let shop = Shop::start().await?;
    let cart = shop.cart("alice").await?;

    for result in add_concurrently(&cart, PEN, 1, 50).await? {
        result?;
    }
    let now = get(&mut cart.clone()).await?;
    assert_eq!(lines(&now), [(PEN.into(), 50)], "50 concurrent adds of 1 make 50");

    // 50 adds of 2 against the default limit of 99 per line: exactly 49 fit.
    let mut accepted = 0;
    for result in add_concurrently(&cart, MUG, 2, 50).await? {
        match result {
            Ok(_) => accepted += 1,
            Err(status) => expect_field(&status, Code::InvalidArgument, "quantity"),
        }
    }
    assert_eq!(accepted, 49);
    let now = get(&mut cart.clone()).await?;
    assert_eq!(lines(&now), [(MUG.into(), 98), (PEN.into(), 50)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_key_has_a_ttl_and_changes_slide_it_but_reads_do_not() -> TestResult {
    let shop = Shop::start_with(&[("CART_TTL", "5s")]).await?;
    let mut alice = shop.cart("alice").await?;
    let mut bob = shop.cart("bob").await?;
    add(&mut alice, MUG, 1).await?;
    add(&mut bob, TEE, 1).await?;
    shop.checkout_settled(&mut bob, "bob", "bob-ttl-1", "pm_card_declined")
        .await?;

    let mut redis = shop.redis().await?;
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN").arg(cursor).query_async(&mut redis).await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert!(keys.iter().any(|k| k == "cart:{alice}"), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("checkout:{bob}:")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("checkout-key:{bob}:")), "{keys:?}");
    for key in &keys {
        // -2: the key went away after SCAN saw it (the hold on bob's cart ends when the
        // cart hears his order was cancelled, which may land just now). -1 is the defect.
        let pttl = shop.pttl(key).await?;
        assert!(pttl > 0 || pttl == -2, "{key} has no expiry (PTTL {pttl})");
    }
    for key in ["cart:{alice}", "cart:{bob}"] {
        let pttl = shop.pttl(key).await?;
        assert!(pttl > 0, "{key} has no expiry (PTTL {pttl})");
    }

    let fresh = shop.pttl("cart:{alice}").await?;
    assert!((4_000..=5_000).contains(&fresh), "PTTL right after a change: {fresh}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let read = get(&mut alice).await?;
    let after_read = shop.pttl("cart:{alice}").await?;
    assert!(
        after_read <= fresh - 1_000,
        "a read does not extend the cart: {after_read}"
    );
    let expires_in = read.expires_at.expect("expires").seconds - chrono::Utc::now().timestamp();
    assert!(
        (2..=4).contains(&expires_in),
        "expires_at follows the remaining TTL: {expires_in}s"
    );

    add(&mut alice, PEN, 1).await?;
    let after_add = shop.pttl("cart:{alice}").await?;
    assert!(
        after_add > after_read + 1_000,
        "a change slides it back: {after_read} -> {after_add}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    update(&mut alice, PEN, 3).await?;
    assert!(shop.pttl("cart:{alice}").await? > 4_000, "UpdateItem slides it too");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    remove(&mut alice, PEN).await?;
    assert!(shop.pttl("cart:{alice}").await? > 4_000, "RemoveItem slides it too");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_cart_is_empty() -> TestResult {
    let shop = Shop::start_with(&[("CART_TTL", "1s")]).await?;
    let mut cart = shop.cart_holding("alice", &[(MUG, 2)]).await?;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let now = get(&mut cart).await?;
    assert!(now.lines.is_empty(), "{now:?}");
    assert_eq!((now.total, now.expires_at), (None, None));
    let status = checkout(&mut cart, "after-expiry", "pm_card_ok")
        .await
        .expect_err("nothing to check out");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "cart is empty");

    let now = add(&mut cart, TEE, 1).await?;
    assert_eq!(lines(&now), [(TEE.into(), 1)], "a new cart starts from nothing");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_and_unknown_skus_are_refused_naming_the_field() -> TestResult {
    let shop = Shop::start_with(&[("CART_MAX_LINES", "2"), ("CART_MAX_QUANTITY", "5")]).await?;
    let mut cart = shop.cart_holding("alice", &[(MUG, 4), (TEE, 5)]).await?;
    let before = get(&mut cart).await?;

    let status = add(&mut cart, MUG, 2).await.expect_err("4 + 2 > 5");
    expect_field(&status, Code::InvalidArgument, "quantity");
    assert!(status.message().contains("at most 5"), "{}", status.message());
    let status = add(&mut cart, MUG, 6).await.expect_err("6 > 5 in one go");
    expect_field(&status, Code::InvalidArgument, "quantity");
    expect_invalid(update(&mut cart, MUG, 6).await, "update above the limit", "quantity");
    let status = add(&mut cart, PEN, 1).await.expect_err("a third line");
    expect_field(&status, Code::InvalidArgument, "sku");
    assert!(status.message().contains("2 lines"), "{}", status.message());
    let status = add(&mut cart, "SKU-NOPE-404", 1).await.expect_err("unknown sku");
    expect_field(&status, Code::InvalidArgument, "sku");
    assert!(
        status.message().contains("no product SKU-NOPE-404"),
        "{}",
        status.message()
    );

    let after = get(&mut cart).await?;
    assert_eq!(lines(&after), lines(&before), "refusals change nothing");
    // The line limit does not stop adding to a line already there.
    let now = add(&mut cart, MUG, 1).await?;
    assert_eq!(lines(&now), [(MUG.into(), 5), (TEE.into(), 5)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_rejected_naming_the_field() -> TestResult {
    let shop = Shop::start().await?;
    let mut cart = shop.cart("alice").await?;
    expect_invalid(add(&mut cart, "", 1).await, "empty sku", "sku");
    expect_invalid(add(&mut cart, "not a sku", 1).await, "malformed sku", "sku");
    expect_invalid(add(&mut cart, MUG, 0).await, "quantity 0", "quantity");
    expect_invalid(add(&mut cart, MUG, -3).await, "negative quantity", "quantity");
    add(&mut cart, MUG, 1).await?;
    let status = update(&mut cart, MUG, 0).await.expect_err("update to 0");
    expect_field(&status, Code::InvalidArgument, "quantity");
    assert!(status.message().contains("RemoveItem"), "{}", status.message());
    let status = update(&mut cart, TEE, 2)
        .await
        .expect_err("update of a line not in the cart");
    assert_eq!(status.code(), Code::NotFound);
    expect_invalid(remove(&mut cart, "").await, "empty sku", "sku");
    expect_invalid(checkout(&mut cart, "", "pm_card_ok").await, "no key", "idempotency_key");
    expect_invalid(
        checkout(&mut cart, "has space", "pm_card_ok").await,
        "bad key",
        "idempotency_key",
    );
    expect_invalid(
        checkout(&mut cart, "k-1", "").await,
        "no payment method",
        "payment_method",
    );
    // svc-order's refusal comes through as it is.
    expect_invalid(
        checkout(&mut cart, "k-2", "pm_bitcoin").await,
        "unknown method",
        "payment_method",
    );
    assert_eq!(lines(&get(&mut cart).await?), [(MUG.into(), 1)], "nothing changed");

    let status = CartServiceClient::new(shop.stack.channel(Service::Cart).await?)
        .get_cart(GetCartRequest {})
        .await
        .expect_err("no identity");
    assert_eq!(status.code(), Code::Unauthenticated);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_see_and_change_only_their_own_cart() -> TestResult {
    let shop = Shop::start().await?;
    let mut alice = shop.cart("alice").await?;
    let mut bob = shop.cart("bob").await?;
    add(&mut alice, MUG, 2).await?;

    assert!(get(&mut bob).await?.lines.is_empty(), "bob does not see alice's cart");
    remove(&mut bob, MUG).await?;
    bob.clear_cart(ClearCartRequest {}).await?;
    let status = update(&mut bob, MUG, 9).await.expect_err("not in bob's cart");
    assert_eq!(status.code(), Code::NotFound);
    let status = checkout(&mut bob, "bob-1", "pm_card_ok")
        .await
        .expect_err("bob's cart is empty");
    assert_eq!(status.code(), Code::FailedPrecondition);
    add(&mut bob, TEE, 1).await?;

    assert_eq!(
        lines(&get(&mut alice).await?),
        [(MUG.into(), 2)],
        "alice's cart untouched"
    );
    assert_eq!(lines(&get(&mut bob).await?), [(TEE.into(), 1)]);
    // Admins get their own cart too: there is no way to name another's.
    let mut admin = shop.cart_as(AsUser::admin("root")).await?;
    assert!(get(&mut admin).await?.lines.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_catalog_fails_fast_leaves_the_cart_alone_and_the_breaker_closes_after_recovery() -> TestResult {
    let mut shop = Shop::start_with(&[
        ("UPSTREAM_BREAKER_FAILURES", "3"),
        ("UPSTREAM_BREAKER_COOL_DOWN", "300ms"),
    ])
    .await?;
    let mut cart = shop.cart_holding("alice", &[(MUG, 1)]).await?;

    shop.stack.stop_service(Service::Inventory).await?;
    // A request already on the stopped server's draining connection may
    // still be answered; wait for the first refusal.
    eventually("the catalog to be gone", || {
        let mut cart = cart.clone();
        async move { Ok(add(&mut cart, TEE, 1).await.err()) }
    })
    .await?;
    let before = get(&mut cart).await?;
    let mut took = Vec::new();
    for _ in 0..6 {
        let started = Instant::now();
        let status = add(&mut cart, TEE, 1).await.expect_err("catalog is down");
        took.push(started.elapsed());
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(
            status.message(),
            "the catalog is temporarily unavailable; try again shortly"
        );
    }
    assert!(
        took.iter().all(|t| *t < Duration::from_millis(1500)),
        "no call waits for the deadline: {took:?}"
    );
    assert!(
        took[3..].iter().all(|t| *t < Duration::from_millis(100)),
        "the open breaker answers at once: {took:?}"
    );
    assert_eq!(get(&mut cart).await?.lines, before.lines, "the cart is unchanged");
    // The mug was looked up before the catalog went: svc-cart kept it, so it
    // is still added, at the price it had.
    let kept = add(&mut cart, MUG, 1).await.map_err(|s| anyhow::anyhow!("{s:?}"))?;
    assert_eq!(lines(&kept), [(MUG.into(), 2)], "{kept:?}");
    // svc-order cannot price the order either; its own answer comes through.
    let status = checkout(&mut cart, "no-catalog-1", "pm_card_ok")
        .await
        .expect_err("svc-order's catalog is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("catalog"), "{}", status.message());

    shop.stack.start_service(Service::Inventory).await?;
    let started = Instant::now();
    let now = once_available("AddItem to work again", || {
        let mut cart = cart.clone();
        async move { add(&mut cart, TEE, 1).await }
    })
    .await?;
    let tees = |cart: &Cart| cart.lines.iter().find(|l| l.sku == TEE).map_or(0, |l| l.quantity);
    assert_eq!(tees(&now), tees(&before) + 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "recovered in {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_order_service_fails_checkout_fast_and_keeps_the_cart() -> TestResult {
    let mut shop = Shop::start().await?;
    let mut cart = shop.cart_holding("alice", &[(MUG, 1)]).await?;
    shop.stack.stop_service(Service::Order).await?;
    let started = Instant::now();
    let status = checkout(&mut cart, "down-1", "pm_card_ok")
        .await
        .expect_err("svc-order is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "orders are temporarily unavailable; try again shortly"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(lines(&get(&mut cart).await?), [(MUG.into(), 1)]);

    // The retry under the same key goes through once svc-order is back.
    shop.stack.start_service(Service::Order).await?;
    let order = once_available("checkout to work again", || {
        let mut cart = cart.clone();
        async move { checkout(&mut cart, "down-1", "pm_card_ok").await }
    })
    .await?;
    let settled = shop.stack.settled("alice", &order.order_id).await?;
    assert_eq!(settled.status, OrderStatus::Confirmed as i32);
    cart_empties(&cart).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_twice_with_one_key_makes_one_order() -> TestResult {
    let shop = Shop::start().await?;
    let mut cart = shop.cart_holding("alice", &[(MUG, 2), (PEN, 1)]).await?;

    // A double click: both at once, then a late retry.
    let (mut one, mut two) = (cart.clone(), cart.clone());
    let (first, second) = tokio::join!(
        checkout(&mut one, "double-1", "pm_card_ok"),
        checkout(&mut two, "double-1", "pm_card_ok"),
    );
    let (first, second) = (first?, second?);
    assert_eq!(first.order_id, second.order_id, "one order");
    assert_eq!(first.user_id, "alice");
    assert_eq!(
        first
            .lines
            .iter()
            .map(|l| (l.sku.clone(), l.quantity))
            .collect::<Vec<_>>(),
        [(MUG.to_owned(), 2), (PEN.to_owned(), 1)]
    );
    assert_eq!(first.total.as_ref().map(|m| m.amount_minor), Some(2 * 1299 + 899));
    let retry = checkout(&mut cart, "double-1", "pm_card_ok").await?;
    assert_eq!(retry.order_id, first.order_id);

    let settled = shop.stack.settled("alice", &first.order_id).await?;
    assert_eq!(settled.status, OrderStatus::Confirmed as i32);
    assert_eq!(
        shop.orders_of("alice").await?.len(),
        1,
        "svc-order holds exactly one order"
    );

    // The same key with another payment method is a different request.
    let status = checkout(&mut cart, "double-1", "pm_card_declined")
        .await
        .expect_err("key reused for a different request");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains("idempotency_key"), "{}", status.message());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_confirmed_checkout_clears_what_it_took_and_keeps_what_came_after() -> TestResult {
    let shop = Shop::start().await?;
    let mut cart = shop.cart_holding("alice", &[(MUG, 2), (TEE, 1)]).await?;
    let order = checkout(&mut cart, "confirm-1", "pm_card_ok").await?;
    assert_eq!(order.status, OrderStatus::Pending as i32);
    // Added after the checkout: not part of the order, so it stays.
    add(&mut cart, PEN, 1).await?;
    add(&mut cart, MUG, 1).await?;

    let settled = shop.stack.settled("alice", &order.order_id).await?;
    assert_eq!(settled.status, OrderStatus::Confirmed as i32);
    let now = cart_becomes(&cart, "the ordered lines to leave the cart", |c| {
        !c.lines.iter().any(|l| l.sku == TEE)
    })
    .await?;
    assert_eq!(lines(&now), [(MUG.into(), 1), (PEN.into(), 1)]);
    assert_eq!(total(&now), Some(("EUR".into(), 1299 + 899)));

    // A retry after the confirmation answers with the same order and takes
    // nothing more from the cart.
    let retry = checkout(&mut cart, "confirm-1", "pm_card_ok").await?;
    assert_eq!(retry.order_id, order.order_id);
    assert_eq!(retry.status, OrderStatus::Confirmed as i32);
    wait_consumers_idle(&shop.stack.jetstream().await?).await?;
    assert_eq!(lines(&get(&mut cart).await?), [(MUG.into(), 1), (PEN.into(), 1)]);

    // A checkout of everything empties the cart.
    shop.checkout_settled(&mut cart, "alice", "confirm-2", "pm_card_ok")
        .await?;
    let now = cart_empties(&cart).await?;
    assert_eq!((now.total, now.expires_at), (None, None));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declined_payment_keeps_the_cart_for_another_try() -> TestResult {
    let shop = Shop::start().await?;
    let mut cart = shop.cart_holding("alice", &[(CAP, 1), (MUG, 1)]).await?;
    let settled = shop
        .checkout_settled(&mut cart, "alice", "declined-1", "pm_card_declined")
        .await?;
    assert_eq!(settled.status, OrderStatus::Cancelled as i32);
    assert_eq!(settled.cancel_reason, CancelReason::PaymentDeclined as i32);
    wait_consumers_idle(&shop.stack.jetstream().await?).await?;
    assert_eq!(
        lines(&get(&mut cart).await?),
        [(CAP.into(), 1), (MUG.into(), 1)],
        "the cart stays"
    );

    let settled = shop
        .checkout_settled(&mut cart, "alice", "declined-2", "pm_card_ok")
        .await?;
    assert_eq!(settled.status, OrderStatus::Confirmed as i32);
    cart_empties(&cart).await?;
    Ok(())
}

/// Publishes a stored message again under a new `Nats-Msg-Id` (the broker
/// stores it again), as an operator's replay would.
async fn replay(js: &async_nats::jetstream::Context, subject: &str) -> TestResult {
    let stored = js
        .get_stream("ORDERS")
        .await?
        .get_last_raw_message_by_subject(subject)
        .await?;
    let mut headers = HeaderMap::new();
    for (name, values) in stored.headers.iter() {
        for value in values {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(async_nats::header::NATS_MESSAGE_ID, Uuid::now_v7().to_string().as_str());
    js.send_publish(
        subject.to_owned(),
        PublishMessage::build().payload(stored.payload.clone()).headers(headers),
    )
    .await?
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_confirmations_and_orders_not_from_the_cart_change_nothing() -> TestResult {
    let shop = Shop::start().await?;
    let js = shop.stack.jetstream().await?;
    let mut cart = shop.cart_holding("alice", &[(MUG, 1)]).await?;
    let order = shop
        .checkout_settled(&mut cart, "alice", "replay-1", "pm_card_ok")
        .await?;
    cart_empties(&cart).await?;

    add(&mut cart, MUG, 3).await?;
    replay(&js, &format!("orders.confirmed.{}", order.order_id)).await?;
    // An order placed straight on svc-order, not through the cart.
    let direct = shop
        .stack
        .orders("alice")
        .await?
        .place_order(PlaceOrderRequest {
            idempotency_key: "direct-1".into(),
            lines: vec![line(MUG, 1)],
            payment_method: "pm_card_ok".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        shop.stack.settled("alice", &direct.order_id).await?.status,
        OrderStatus::Confirmed as i32
    );
    wait_consumers_idle(&js).await?;
    assert_eq!(lines(&get(&mut cart).await?), [(MUG.into(), 3)], "nothing taken twice");

    // An event type this build does not know is parked, not applied.
    let id = Uuid::now_v7();
    let headers = shop_runtime::event::headers(
        id,
        "shop.events.v9.OrderConfirmed",
        "test",
        &id.to_string(),
        chrono::Utc::now(),
        &Default::default(),
    );
    js.send_publish(
        format!("orders.confirmed.{id}"),
        PublishMessage::build()
            .payload(Bytes::from_static(b"{}"))
            .headers(headers),
    )
    .await?
    .await?;
    let dlq = js.get_stream("DLQ").await?;
    let subject = format!("dlq.cart-orders.orders.confirmed.{id}");
    eventually("the unknown event on the DLQ", || {
        let dlq = dlq.clone();
        let subject = subject.clone();
        async move { Ok(dlq.get_last_raw_message_by_subject(&subject).await.ok()) }
    })
    .await?;
    assert_eq!(lines(&get(&mut cart).await?), [(MUG.into(), 3)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_redis_and_a_redis_outage_is_a_generic_unavailable() -> TestResult {
    let mut shop = Shop::start().await?;
    let (code, _) = shop.admin_get("/readyz").await?;
    assert_eq!(code, 200);
    let mut cart = shop.cart_holding("alice", &[(MUG, 1)]).await?;

    shop.redis_server().stop().await;
    let (code, body) = shop.admin_get("/readyz").await?;
    assert_eq!(code, 503);
    assert!(body.contains("redis unreachable"), "{body}");
    let started = Instant::now();
    let status = get(&mut cart).await.expect_err("redis is down");
    let status = status.downcast_ref::<Status>().expect("a gRPC status");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "carts are temporarily unavailable; try again shortly",
        "no internals echoed"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    shop.redis_server().restart().await?;
    eventually("readiness to return", || async {
        Ok((shop.admin_get("/readyz").await?.0 == 200).then_some(()))
    })
    .await?;
    let now = add(&mut cart, TEE, 1).await?;
    assert_eq!(lines(&now), [(TEE.into(), 1)], "the restarted Redis came back empty");
    Ok(())
}

/// A store of Alice's cart on `redis` with the mug in it `units` times
/// (checkout records kept a minute, in-flight marks 400 ms).
async fn alice_with_mugs(
    redis: &RedisServer,
    units: i32,
) -> anyhow::Result<(svc_cart::carts::CartStore, shop_runtime::identity::UserId)> {
    use svc_cart::carts::{CartStore, Expiries, Limits};
    let store = CartStore::new(
        &redis.url(),
        Duration::from_secs(1),
        Limits {
            max_lines: 50,
            max_quantity: 99,
        },
        Expiries {
            cart: Duration::from_secs(60),
            checkout: Duration::from_secs(60),
            in_flight: Duration::from_millis(400),
        },
    )?;
    let alice = shop_runtime::identity::UserId::parse("alice").map_err(anyhow::Error::msg)?;
    add_mugs(&store, &alice, units).await?;
    Ok((store, alice))
}

async fn add_mugs(
    store: &svc_cart::carts::CartStore,
    user: &shop_runtime::identity::UserId,
    units: i32,
) -> anyhow::Result<()> {
    use shop_runtime::values::{Currency, Money, Quantity, Sku};
    let product = svc_cart::carts::Product {
        name: "Enamel mug".into(),
        unit_price: Money::new(Currency::parse("EUR").map_err(anyhow::Error::msg)?, 1299),
    };
    let mug = Sku::parse(MUG).map_err(anyhow::Error::msg)?;
    store
        .add(user, &mug, Quantity::new(units).map_err(anyhow::Error::msg)?, &product)
        .await?;
    Ok(())
}

/// The lines a checkout under `key` begins with.
async fn begin(
    store: &svc_cart::carts::CartStore,
    user: &shop_runtime::identity::UserId,
    key: &str,
) -> anyhow::Result<Vec<(String, i32)>> {
    match store.begin_checkout(user, key).await? {
        svc_cart::carts::Begun::Lines(lines) => Ok(lines),
        other => anyhow::bail!("expected lines, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_that_overtakes_its_checkout_record_waits_for_it_and_applies_once() -> TestResult {
    use svc_cart::carts::{Ended, OrderEnd::Confirmed, OrderState::Open};
    let redis = RedisServer::start().await?;
    let (store, alice) = alice_with_mugs(&redis, 3).await?;

    let lines = begin(&store, &alice, "k-1").await?;
    assert_eq!(lines, [(MUG.to_owned(), 3)]);
    // The confirmation arrives before the PlaceOrder reply was recorded.
    assert_eq!(
        store.end_checkout(&alice, "order-1", Confirmed).await?,
        Ended::CheckoutInFlight
    );
    store.record_checkout(&alice, "k-1", "order-1", &lines, Open).await?;
    assert_eq!(store.end_checkout(&alice, "order-1", Confirmed).await?, Ended::Now);
    assert!(store.get(&alice).await?.lines.is_empty());
    assert_eq!(store.end_checkout(&alice, "order-1", Confirmed).await?, Ended::Already);
    // A late retry records nothing new over the tombstone.
    store.record_checkout(&alice, "k-1", "order-1", &lines, Open).await?;
    assert_eq!(store.end_checkout(&alice, "order-1", Confirmed).await?, Ended::Already);

    // A checkout whose reply never came (crash, timeout) stops holding
    // confirmations back once its window has passed.
    add_mugs(&store, &alice, 1).await?;
    begin(&store, &alice, "k-2").await?;
    assert_eq!(
        store.end_checkout(&alice, "order-2", Confirmed).await?,
        Ended::CheckoutInFlight
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store.end_checkout(&alice, "order-2", Confirmed).await?,
        Ended::NotFromCart
    );
    assert_eq!(store.get(&alice).await?.lines.len(), 1, "nothing taken");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_under_way_holds_what_it_took_until_it_ends() -> TestResult {
    use svc_cart::carts::{Begun, Ended, OrderEnd, OrderState::Open, Unanswered};
    let redis = RedisServer::start().await?;
    let (store, alice) = alice_with_mugs(&redis, 3).await?;
    let refusal = |result: Result<Begun, shop_runtime::api_error::ApiError>| match result {
        Err(shop_runtime::api_error::ApiError::FailedPrecondition(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };

    let taken = begin(&store, &alice, "k-1").await?;
    // While the first checkout waits for its order, a second one could
    // take the same mugs: it is refused.
    let busy = refusal(store.begin_checkout(&alice, "k-2").await);
    assert!(busy.contains("another checkout"), "{busy}");
    store.record_checkout(&alice, "k-1", "order-1", &taken, Open).await?;
    let held = refusal(store.begin_checkout(&alice, "k-2").await);
    assert!(held.contains("in an order still under way"), "{held}");

    // One more mug before order-1 is confirmed: only that one is ordered.
    add_mugs(&store, &alice, 1).await?;
    let more = begin(&store, &alice, "k-3").await?;
    assert_eq!(
        more,
        [(MUG.to_owned(), 1)],
        "the three mugs of order-1 are not ordered again"
    );
    store.record_checkout(&alice, "k-3", "order-3", &more, Open).await?;

    // order-1 is cancelled: its three mugs stay in the cart, free again.
    assert_eq!(
        store.end_checkout(&alice, "order-1", OrderEnd::Cancelled).await?,
        Ended::Now
    );
    assert_eq!(store.get(&alice).await?.lines[0].quantity, 4, "the cart keeps them");
    assert_eq!(begin(&store, &alice, "k-4").await?, [(MUG.to_owned(), 3)]);
    store.abandon_checkout(&alice, "k-4", Unanswered::NoOrder).await?;
    // order-3 is confirmed: its mug leaves, the three stay.
    assert_eq!(
        store.end_checkout(&alice, "order-3", OrderEnd::Confirmed).await?,
        Ended::Now
    );
    assert_eq!(store.get(&alice).await?.lines[0].quantity, 3);
    assert_eq!(begin(&store, &alice, "k-5").await?, [(MUG.to_owned(), 3)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_checkout_is_settled_before_another_key_orders_anything() -> TestResult {
    use svc_cart::carts::{Begun, OrderEnd, OrderState, Unanswered};
    let redis = RedisServer::start().await?;
    let (store, alice) = alice_with_mugs(&redis, 2).await?;
    let sent = begin(&store, &alice, "k-1").await?;
    store.abandon_checkout(&alice, "k-1", Unanswered::MaybePlaced).await?;
    // Until its window has passed, the call may still be placing the order.
    let busy = store.begin_checkout(&alice, "k-2").await;
    assert!(
        matches!(&busy, Err(shop_runtime::api_error::ApiError::FailedPrecondition(why)) if why.contains("another checkout")),
        "{busy:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.begin_checkout(&alice, "k-2").await?, Begun::Unsure("k-1".into()));
    // A retry under the key itself re-sends what it sent.
    assert_eq!(begin(&store, &alice, "k-1").await?, sent);
    // svc-order had placed it, and it is confirmed by now: recorded and
    // ended at once.
    let confirmed = OrderState::Ended(OrderEnd::Confirmed);
    store
        .record_checkout(&alice, "k-1", "order-1", &sent, confirmed)
        .await?;
    assert!(store.get(&alice).await?.lines.is_empty());

    // One that placed nothing is forgotten: its lines are free again.
    add_mugs(&store, &alice, 1).await?;
    begin(&store, &alice, "k-3").await?;
    store.abandon_checkout(&alice, "k-3", Unanswered::MaybePlaced).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.begin_checkout(&alice, "k-4").await?, Begun::Unsure("k-3".into()));
    store.forget_unsure(&alice, "k-3").await?;
    assert_eq!(begin(&store, &alice, "k-4").await?, [(MUG.to_owned(), 1)]);
    Ok(())
}

/// The caller's trace goes through svc-cart to svc-order and on into the
/// events of the order: one checkout, one trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_continues_the_callers_trace_into_the_orders_events() -> TestResult {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let shop = Shop::start().await?;
    let mut cart = shop.cart("tracy").await?;
    add(&mut cart, MUG, 1).await?;
    let mut request = tonic::Request::new(CheckoutRequest {
        idempotency_key: "traced-1".into(),
        payment_method: "pm_card_ok".into(),
    });
    request
        .metadata_mut()
        .insert("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01").parse()?);
    let order = cart.checkout(request).await?.into_inner();

    // The relay publishes right after the commit, a moment after the answer.
    let js = shop.stack.jetstream().await?;
    let subject = format!("orders.placed.{}", order.order_id);
    let placed = eventually("orders.placed on the stream", || {
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            Ok(js
                .get_stream("ORDERS")
                .await?
                .get_last_raw_message_by_subject(&subject)
                .await
                .ok())
        }
    })
    .await?;
    let traceparent = placed
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")),
        "orders.placed carries {traceparent:?}"
    );
    Ok(())
}

fn order_lines(order: &Order) -> Vec<(String, i32)> {
    order.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect()
}

/// Checks out, waiting (bounded) while an earlier checkout of the cart may
/// still be under way, and while svc-order is out of reach.
async fn checkout_once_not_busy(cart: &CartClient, key: &str) -> anyhow::Result<Order> {
    eventually("the earlier checkout's window to pass", || {
        let mut cart = cart.clone();
        async move {
            match checkout(&mut cart, key, "pm_card_ok").await {
                Ok(order) => Ok(Some(order)),
                Err(status)
                    if status.code() == Code::Unavailable
                        || (status.code() == Code::FailedPrecondition
                            && status.message().contains("another checkout")) =>
                {
                    Ok(None)
                }
                Err(status) => Err(status.into()),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_that_finds_its_order_already_cancelled_leaves_the_cart_free() -> TestResult {
    let (shop, link) = Shop::start_unanswered().await?;
    let mut cart = shop.cart_holding("alice", &[(POSTER, 1)]).await?;
    let placed = shop.checkout_unanswered(&link, &mut cart, "poster-1").await?;
    let cancelled = shop.stack.settled("alice", &placed.order_id).await?;
    assert_eq!(cancelled.cancel_reason, CancelReason::OutOfStock as i32);

    // The shopper retries under the same key and gets the cancelled order:
    // no event will end it again, so the checkout ends now.
    let retry = checkout(&mut cart, "poster-1", "pm_card_ok").await?;
    assert_eq!(retry.order_id, placed.order_id);
    assert_eq!(retry.status, OrderStatus::Cancelled as i32);
    let again = checkout(&mut cart, "poster-2", "pm_card_ok").await?;
    assert_ne!(again.order_id, placed.order_id);
    assert_eq!(
        order_lines(&again),
        [(POSTER.to_owned(), 1)],
        "the poster is free again"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkout_after_an_unanswered_one_orders_only_what_that_order_did_not_take() -> TestResult {
    let (shop, link) = Shop::start_unanswered().await?;
    let mut cart = shop.cart_holding("alice", &[(MUG, 2)]).await?;
    let first = shop.checkout_unanswered(&link, &mut cart, "mugs-1").await?;

    // A changed cart is a new request, under a new key: svc-cart learns
    // what became of the first one before ordering anything.
    add(&mut cart, TEE, 1).await?;
    let second = checkout_once_not_busy(&cart, "mugs-and-tee-1").await?;
    assert_eq!(
        order_lines(&second),
        [(TEE.to_owned(), 1)],
        "the mugs are in {} already",
        first.order_id
    );
    for order in [&first, &second] {
        let settled = shop.stack.settled("alice", &order.order_id).await?;
        assert_eq!(settled.status, OrderStatus::Confirmed as i32);
    }
    cart_empties(&cart).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkout_after_an_unanswered_one_that_placed_nothing_orders_everything() -> TestResult {
    let (shop, link) = Shop::start_unanswered().await?;
    let mut cart = shop.cart_holding("alice", &[(MUG, 1)]).await?;
    // The request never reaches svc-order: svc-cart cannot tell.
    link.set(Fault::Blackhole);
    let status = checkout(&mut cart, "lost-1", "pm_card_ok")
        .await
        .expect_err("svc-cart's deadline passes");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    link.set(Fault::None);

    add(&mut cart, TEE, 1).await?;
    let order = checkout_once_not_busy(&cart, "all-1").await?;
    assert_eq!(order_lines(&order), [(MUG.to_owned(), 1), (TEE.to_owned(), 1)]);
    // The first key no longer pins the mug: a retry under it finds it taken.
    let status = checkout(&mut cart, "lost-1", "pm_card_ok")
        .await
        .expect_err("everything is in the order under way");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    Ok(())
}
