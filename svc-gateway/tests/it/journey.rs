//! A shopper's whole journey through the gateway, with real tokens: fill the
//! cart, check out, watch the order settle (native gRPC and gRPC-web), and a
//! declined payment. svc-cart runs on its own Redis beside the saga services
//! (`shop_harness::Stack` on a real nats-server and PostgreSQL), and every
//! call goes through the gateway.

use crate::support;

use prost::Message;
use shop_harness::{Service, Stack, StackOptions, eventually, wait_consumers_idle};
use shop_proto::{
    cart::v1::{AddItemRequest, Cart, CheckoutRequest, GetCartRequest, cart_service_client::CartServiceClient},
    order::v1::{
        CancelReason, GetOrderRequest, Order, OrderStatus, WatchOrderRequest, order_service_client::OrderServiceClient,
    },
};
use support::{Gateway, GrpcWebStream, Metadata, WebFrame, assert_grpc_web_head, within};
use tonic::{Streaming, service::interceptor::InterceptedService, transport::Channel};

type Carts = CartServiceClient<InterceptedService<Channel, Metadata>>;
type Orders = OrderServiceClient<InterceptedService<Channel, Metadata>>;

const MUG: &str = "SKU-MUG-001"; // 12.99 EUR, 100 in stock
const PEN: &str = "SKU-PEN-001"; // 8.99 EUR, 500 in stock
const TEE: &str = "SKU-TEE-001"; // 24.99 EUR, 50 in stock
const CAP: &str = "SKU-CAP-001"; // 18.99 EUR, 25 in stock

const PENDING: i32 = OrderStatus::Pending as i32;
const RESERVED: i32 = OrderStatus::Reserved as i32;
const CONFIRMED: i32 = OrderStatus::Confirmed as i32;
const CANCELLED: i32 = OrderStatus::Cancelled as i32;

/// The saga services, svc-cart and the gateway in front of them all.
struct Shop {
    // Dropped in this order: the edge first, the stack last.
    gateway: Gateway,
    stack: Stack,
}

impl Shop {
    async fn start(options: StackOptions) -> Self {
        let stack = Stack::start_with(options.with(Service::Cart))
            .await
            .expect("saga services and svc-cart");
        let gateway = Gateway::start(stack.url_settings()).await;
        gateway.channel().await;
        Self { gateway, stack }
    }

    async fn carts(&self, user: &str) -> Carts {
        CartServiceClient::new(self.gateway.as_user(user, &["customer"]).await)
    }

    async fn orders(&self, user: &str) -> Orders {
        OrderServiceClient::new(self.gateway.as_user(user, &["customer"]).await)
    }
}

async fn add(carts: &mut Carts, sku: &str, quantity: i32) -> Cart {
    carts
        .add_item(AddItemRequest {
            sku: sku.into(),
            quantity,
        })
        .await
        .unwrap_or_else(|status| panic!("AddItem {sku} x{quantity} through the gateway: {status:?}"))
        .into_inner()
}

async fn get_cart(carts: &mut Carts) -> Cart {
    carts
        .get_cart(GetCartRequest {})
        .await
        .expect("GetCart through the gateway")
        .into_inner()
}

async fn checkout(carts: &mut Carts, key: &str, payment_method: &str) -> Order {
    carts
        .checkout(CheckoutRequest {
            idempotency_key: key.into(),
            payment_method: payment_method.into(),
        })
        .await
        .unwrap_or_else(|status| panic!("Checkout {key} through the gateway: {status:?}"))
        .into_inner()
}

async fn get_order(orders: &mut Orders, order_id: &str) -> Order {
    orders
        .get_order(GetOrderRequest {
            order_id: order_id.into(),
        })
        .await
        .expect("GetOrder through the gateway")
        .into_inner()
}

/// `(sku, quantity)` of every cart line, in the cart's order.
fn cart_lines(cart: &Cart) -> Vec<(String, i32)> {
    cart.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect()
}

/// `(sku, quantity, unit price)` of every order line, sorted by SKU.
fn order_lines(order: &Order) -> Vec<(String, i32, Option<i64>)> {
    let mut lines: Vec<_> = order
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity, l.unit_price.as_ref().map(|m| m.amount_minor)))
        .collect();
    lines.sort();
    lines
}

fn money(amount: Option<&shop_proto::common::v1::Money>) -> Option<(String, i64)> {
    amount.map(|m| (m.currency_code.clone(), m.amount_minor))
}

fn status_name(status: i32) -> String {
    OrderStatus::try_from(status).map_or_else(|_| format!("unknown status {status}"), |s| format!("{s:?}"))
}

/// A WatchOrder stream through the gateway, with the statuses it has
/// carried so far.
struct Watching {
    updates: Streaming<Order>,
    order_id: String,
    seen: Vec<i32>,
}

impl Watching {
    async fn open(orders: &mut Orders, order_id: &str) -> Self {
        let updates = orders
            .watch_order(WatchOrderRequest {
                order_id: order_id.into(),
            })
            .await
            .expect("WatchOrder through the gateway")
            .into_inner();
        Self {
            updates,
            order_id: order_id.to_owned(),
            seen: Vec::new(),
        }
    }

    /// Reads updates until one carries `until`; every update must be of the
    /// watched order and have a status in `allowed`.
    async fn read_until(&mut self, until: i32, allowed: &[i32]) {
        let seen = &mut self.seen;
        loop {
            let update = self
                .updates
                .message()
                .await
                .expect("the stream carries no error")
                .unwrap_or_else(|| panic!("the stream ended before {}; saw {seen:?}", status_name(until)));
            assert_eq!(update.order_id, self.order_id);
            assert!(
                allowed.contains(&update.status),
                "unexpected {} on the way to {}; saw {seen:?}",
                status_name(update.status),
                status_name(until)
            );
            seen.push(update.status);
            if update.status == until {
                return;
            }
        }
    }
}

/// The status of the next frame of a gRPC-web WatchOrder, which must be an
/// `Order` message of `order_id`.
async fn next_web_status(web: &mut GrpcWebStream, order_id: &str, seen: &[i32]) -> i32 {
    match web.next_frame().await {
        Some(WebFrame::Message(bytes)) => {
            let update = Order::decode(bytes).expect("an Order message");
            assert_eq!(update.order_id, order_id);
            update.status
        }
        other => panic!("expected an Order frame after {seen:?}, got {other:?}"),
    }
}

/// Polls the cart through the gateway (bounded) until `done` holds.
async fn cart_becomes(carts: &Carts, what: &str, done: impl Fn(&Cart) -> bool) -> Cart {
    eventually(what, || {
        let mut carts = carts.clone();
        let done = &done;
        async move {
            let now = carts.get_cart(GetCartRequest {}).await?.into_inner();
            Ok(done(&now).then_some(now))
        }
    })
    .await
    .expect("the cart reaches the expected state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shopper_fills_the_cart_checks_out_and_watches_the_order_confirm_over_grpc_and_grpc_web() {
    let mut shop = Shop::start(StackOptions {
        held_back: vec![Service::Payment],
        ..StackOptions::default()
    })
    .await;
    let mut carts = shop.carts("alice").await;
    let mut orders = shop.orders("alice").await;

    // Fill the cart: names and prices come from the catalog.
    let after_first = within("AddItem", 30, add(&mut carts, MUG, 2)).await;
    assert_eq!(cart_lines(&after_first), [(MUG.into(), 2)]);
    within("AddItem", 30, add(&mut carts, PEN, 1)).await;
    let cart = within("GetCart", 30, get_cart(&mut carts)).await;
    assert_eq!(cart_lines(&cart), [(MUG.into(), 2), (PEN.into(), 1)], "lines by SKU");
    assert_eq!(cart.lines[0].name, "Enamel mug");
    assert_eq!(cart.lines[0].unit_price.as_ref().map(|m| m.amount_minor), Some(1299));
    assert_eq!(cart.lines[1].unit_price.as_ref().map(|m| m.amount_minor), Some(899));
    assert_eq!(money(cart.total.as_ref()), Some(("EUR".into(), 2 * 1299 + 899)));
    assert!(cart.expires_at.is_some(), "a cart with lines expires");

    // Check out: the order answers at once, PENDING, priced like the cart.
    let order = within("Checkout", 30, checkout(&mut carts, "journey-1", "pm_card_ok")).await;
    assert_eq!(order.status, PENDING, "{order:?}");
    assert_eq!(order.user_id, "alice", "the identity of the token");
    assert_eq!(
        order_lines(&order),
        [(MUG.into(), 2, Some(1299)), (PEN.into(), 1, Some(899))]
    );
    assert_eq!(money(order.total.as_ref()), Some(("EUR".into(), 2 * 1299 + 899)));
    assert_eq!(order.payment_method, "pm_card_ok");

    // Watch over native gRPC: with svc-payment down the order gets as far
    // as RESERVED and the stream stays open...
    let mut watching = within("WatchOrder", 30, Watching::open(&mut orders, &order.order_id)).await;
    within(
        "the order to be reserved",
        60,
        watching.read_until(RESERVED, &[PENDING, RESERVED]),
    )
    .await;
    // ...until svc-payment comes up and charges: CONFIRMED ends the stream.
    shop.stack
        .start_service(Service::Payment)
        .await
        .expect("svc-payment starts");
    within(
        "the order to be confirmed",
        60,
        watching.read_until(CONFIRMED, &[CONFIRMED]),
    )
    .await;
    let end = within("the end of the stream", 10, watching.updates.message()).await;
    assert!(
        matches!(end, Ok(None)),
        "after CONFIRMED the stream ends with OK, got {end:?}"
    );
    let seen = &watching.seen;
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "each status once: {seen:?}"
    );

    // The confirmation empties the cart (svc-cart consumes orders.confirmed).
    let emptied = within(
        "the cart to empty",
        30,
        cart_becomes(&carts, "the cart to empty", |c| c.lines.is_empty()),
    )
    .await;
    assert_eq!((emptied.total, emptied.expires_at), (None, None));

    // The same key again: the same order, although the cart is empty now.
    let again = within("Checkout again", 30, checkout(&mut carts, "journey-1", "pm_card_ok")).await;
    assert_eq!(again.order_id, order.order_id, "same key, same order");
    assert_eq!(order_lines(&again), order_lines(&order));
    assert_eq!(again.status, CONFIRMED, "{again:?}");
    let stored = within("GetOrder", 30, get_order(&mut orders, &order.order_id)).await;
    assert_eq!(stored.status, CONFIRMED);

    // A second checkout, watched over gRPC-web on HTTP/1.1 as a browser
    // would: svc-payment is down again, so the first frames must arrive
    // while the stream is still open.
    within("AddItem", 30, add(&mut carts, TEE, 1)).await;
    shop.stack
        .stop_service(Service::Payment)
        .await
        .expect("svc-payment stops");
    let second = within("second Checkout", 30, checkout(&mut carts, "journey-2", "pm_card_ok")).await;
    assert_eq!(second.status, PENDING, "{second:?}");
    assert_ne!(second.order_id, order.order_id);
    let token = shop.gateway.idp.token("alice", &["customer"]);
    let mut web = within(
        "gRPC-web WatchOrder",
        30,
        GrpcWebStream::open(
            shop.gateway.addr,
            "/shop.order.v1.OrderService/WatchOrder",
            &WatchOrderRequest {
                order_id: second.order_id.clone(),
            },
            Some(&token),
        ),
    )
    .await;
    assert_grpc_web_head(web.http_status, web.version, &web.headers);
    assert!(
        web.headers.get("grpc-status").is_none(),
        "a stream's status comes in the trailers frame, not in headers"
    );
    let mut web_seen = Vec::new();
    within("the second order to be reserved (gRPC-web)", 60, async {
        loop {
            let status = next_web_status(&mut web, &second.order_id, &web_seen).await;
            assert!(
                [PENDING, RESERVED].contains(&status),
                "{} before payment",
                status_name(status)
            );
            web_seen.push(status);
            if status == RESERVED {
                break;
            }
        }
    })
    .await;
    shop.stack
        .start_service(Service::Payment)
        .await
        .expect("svc-payment starts again");
    within("the second order to be confirmed (gRPC-web)", 60, async {
        let status = next_web_status(&mut web, &second.order_id, &web_seen).await;
        assert_eq!(status, CONFIRMED, "after RESERVED: {}", status_name(status));
        web_seen.push(status);
    })
    .await;
    let trailers = match within("the trailers frame", 10, web.next_frame()).await {
        Some(WebFrame::Trailers(trailers)) => trailers,
        other => panic!("expected the trailers frame after CONFIRMED, got {other:?}"),
    };
    assert_eq!(
        trailers.get("grpc-status").map(String::as_str),
        Some("0"),
        "{trailers:?}"
    );
    assert!(
        within("the end of the body", 10, web.next_frame()).await.is_none(),
        "nothing after the trailers frame"
    );
    assert!(
        web_seen.windows(2).all(|pair| pair[0] < pair[1]),
        "each status once: {web_seen:?}"
    );

    within(
        "the cart to empty again",
        30,
        cart_becomes(&carts, "the cart to empty again", |c| c.lines.is_empty()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declined_checkout_through_the_gateway_cancels_and_keeps_the_cart() {
    let shop = Shop::start(StackOptions::default()).await;
    let mut carts = shop.carts("bob").await;
    let mut orders = shop.orders("bob").await;

    within("AddItem", 30, add(&mut carts, CAP, 1)).await;
    within("AddItem", 30, add(&mut carts, MUG, 3)).await;
    let order = within("Checkout", 30, checkout(&mut carts, "declined-1", "pm_card_declined")).await;
    assert_eq!(order.status, PENDING, "{order:?}");
    assert_eq!(order.user_id, "bob");

    let mut watching = within("WatchOrder", 30, Watching::open(&mut orders, &order.order_id)).await;
    within(
        "the order to be cancelled",
        60,
        watching.read_until(CANCELLED, &[PENDING, RESERVED, CANCELLED]),
    )
    .await;
    let end = within("the end of the stream", 10, watching.updates.message()).await;
    assert!(
        matches!(end, Ok(None)),
        "after CANCELLED the stream ends with OK, got {end:?}"
    );
    let cancelled = within("GetOrder", 30, get_order(&mut orders, &order.order_id)).await;
    assert_eq!(cancelled.status, CANCELLED);
    assert_eq!(
        cancelled.cancel_reason,
        CancelReason::PaymentDeclined as i32,
        "{cancelled:?}"
    );

    // Once every consumer (svc-cart's included) has caught up, the cart
    // still holds what it held, and the held stock is back.
    within(
        "the consumers to drain",
        60,
        wait_consumers_idle(&shop.stack.jetstream().await.expect("jetstream")),
    )
    .await
    .expect("consumers drain");
    let cart = within("GetCart", 30, get_cart(&mut carts)).await;
    assert_eq!(
        cart_lines(&cart),
        [(CAP.into(), 1), (MUG.into(), 3)],
        "the cart stays for another try"
    );
    assert_eq!(money(cart.total.as_ref()), Some(("EUR".into(), 1899 + 3 * 1299)));
    for sku in [CAP, MUG] {
        let stock = shop.stack.stock(sku).await.expect("stock");
        assert_eq!(stock.reserved, 0, "{sku}: the reservation is released: {stock:?}");
    }
}
