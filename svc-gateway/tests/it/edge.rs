//! The gateway against the real services (`shop_harness::Stack`: svc-order,
//! svc-inventory, svc-payment, svc-notify on a real nats-server and
//! PostgreSQL), with real JWTs signed by a key made in the test.

use crate::support;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use prost::Message;
use serde_json::json;
use shop_harness::{Service, Stack, eventually, line};
use shop_proto::{
    auth::v1::{IssueTokenRequest, dev_auth_service_client::DevAuthServiceClient},
    catalog::v1::{ListProductsRequest, ListProductsResponse, catalog_service_client::CatalogServiceClient},
    inventory::v1::{RestockRequest, inventory_service_client::InventoryServiceClient},
    order::v1::{
        GetOrderRequest, ListOrdersRequest, Order, OrderStatus, PlaceOrderRequest, WatchOrderRequest,
        order_service_client::OrderServiceClient,
    },
    payment::v1::{GetPaymentRequest, payment_service_client::PaymentServiceClient},
};
use shop_runtime::identity::IDENTITY_HEADER;
use support::{
    Gateway, Metadata, TestIdp, assert_grpc_web_head, b64, claims, grpc_web_call, no_upstreams, now, within,
};
use tonic::{Code, Status, service::interceptor::InterceptedService, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

fn setting(key: &str, value: &str) -> (String, String) {
    (key.to_owned(), value.to_owned())
}

/// The gateway over `upstreams` (their URL settings), with `extra` settings.
async fn gateway_with(upstreams: Vec<(String, String)>, extra: &[(&str, &str)]) -> Gateway {
    let mut settings = upstreams;
    settings.extend(extra.iter().map(|(key, value)| setting(key, value)));
    Gateway::start(settings).await
}

fn place_request(key: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        idempotency_key: key.into(),
        lines: vec![line("SKU-MUG-001", 1)],
        payment_method: "pm_card_ok".into(),
    }
}

fn token_request(user: &str, role: &str) -> IssueTokenRequest {
    IssueTokenRequest {
        user_id: user.into(),
        roles: vec![role.into()],
    }
}

fn get_order(order_id: &str) -> GetOrderRequest {
    GetOrderRequest {
        order_id: order_id.into(),
    }
}

fn watch_order(order_id: &str) -> WatchOrderRequest {
    WatchOrderRequest {
        order_id: order_id.into(),
    }
}

type Orders = OrderServiceClient<InterceptedService<Channel, Metadata>>;

/// PlaceOrder under idempotency key `key`, which must pass (`what` names
/// the call if it does not).
async fn place(orders: &mut Orders, key: &str, what: &str) -> Order {
    orders.place_order(place_request(key)).await.expect(what).into_inner()
}

/// PlaceOrder under idempotency key `key`, which must be refused.
async fn refused_place(orders: &mut Orders, key: &str, what: &str) -> Status {
    orders.place_order(place_request(key)).await.expect_err(what)
}

const GET_ORDER: &str = "/shop.order.v1.OrderService/GetOrder";
const WATCH_ORDER: &str = "/shop.order.v1.OrderService/WatchOrder";
const PLACE_ORDER: &str = "/shop.order.v1.OrderService/PlaceOrder";
const LIST_PRODUCTS: &str = "/shop.catalog.v1.CatalogService/ListProducts";

async fn health_of(gateway: &Gateway, service: &str) -> Option<i32> {
    let mut client = HealthClient::new(gateway.channel().await);
    client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

/// `$name` lists the services over server reflection `$version`: v1 and
/// v1alpha are the same protocol in two packages, so one body serves both.
macro_rules! list_services {
    ($name:ident, $version:ident) => {
        async fn $name(gateway: &Gateway) -> Vec<String> {
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            };
            let mut client = ServerReflectionClient::new(gateway.channel().await);
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut responses = client
                .server_reflection_info(futures::stream::iter([request]))
                .await
                .expect("reflection answers")
                .into_inner();
            let response = responses.next().await.expect("one response").expect("no error");
            match response.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
                other => panic!("unexpected reflection answer {other:?}"),
            }
        }
    };
}

list_services!(list_services_v1, v1);
list_services!(list_services_v1alpha, v1alpha);

#[tokio::test]
async fn reflection_lists_the_public_services_and_dev_tokens_are_off_by_default() {
    let gateway = Gateway::start(no_upstreams()).await;
    within("reflection", 30, async {
        let expected = [
            "shop.catalog.v1.CatalogService",
            "shop.inventory.v1.InventoryService",
            "shop.cart.v1.CartService",
            "shop.order.v1.OrderService",
            "shop.payment.v1.PaymentService",
            "shop.notify.v1.NotificationService",
            "shop.auth.v1.DevAuthService",
        ];
        for listed in [list_services_v1(&gateway).await, list_services_v1alpha(&gateway).await] {
            let shop: Vec<&str> = listed
                .iter()
                .map(String::as_str)
                .filter(|name| !name.starts_with("grpc."))
                .collect();
            let mut shop_sorted = shop.clone();
            shop_sorted.sort_unstable();
            let mut expected_sorted = expected.to_vec();
            expected_sorted.sort_unstable();
            assert_eq!(shop_sorted, expected_sorted, "all listed: {listed:?}");
            assert!(listed.iter().any(|s| s == "grpc.health.v1.Health"), "{listed:?}");
            assert!(
                listed.iter().all(|s| !s.starts_with("shop.events")),
                "events are not a public service: {listed:?}"
            );
        }

        let mut dev = DevAuthServiceClient::new(gateway.channel().await);
        let refused = dev
            .issue_token(token_request("alice", "admin"))
            .await
            .expect_err("dev auth is off by default");
        assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    })
    .await;
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_with_helpful_messages() {
    let gateway = Gateway::start(no_upstreams()).await;
    within("token checks", 30, async {
        let idp = &gateway.idp;
        let impostor = TestIdp::new(&idp.kid);
        let alice = |extra| claims("alice", &["customer"], extra);

        let mut hs256 = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        hs256.kid = Some(idp.kid.clone());
        let hmac_with_public_key = jsonwebtoken::encode(
            &hs256,
            &alice(json!({})),
            &jsonwebtoken::EncodingKey::from_secret(idp.public_key_bytes()),
        )
        .expect("hs256");
        let hmac_with_public_jwk = jsonwebtoken::encode(
            &hs256,
            &alice(json!({})),
            &jsonwebtoken::EncodingKey::from_secret(idp.public_jwk().to_string().as_bytes()),
        )
        .expect("hs256");
        let alg_none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT", "kid": idp.kid})
                .to_string()
                .as_bytes()),
            b64(alice(json!({})).to_string().as_bytes())
        );

        let cases: Vec<(&str, String, &str)> = vec![
            (
                "expired",
                idp.sign(&alice(json!({"exp": now() - 120}))),
                "token expired",
            ),
            (
                "not yet valid",
                idp.sign(&alice(json!({"nbf": now() + 120}))),
                "token not yet valid",
            ),
            (
                "wrong issuer",
                idp.sign(&alice(json!({"iss": "https://evil.test"}))),
                "wrong issuer",
            ),
            (
                "wrong audience",
                idp.sign(&alice(json!({"aud": "another-app"}))),
                "wrong audience",
            ),
            (
                "another key, same kid",
                impostor.sign(&alice(json!({}))),
                "invalid token",
            ),
            ("alg none", alg_none, "invalid token"),
            ("HS256 keyed with the public key", hmac_with_public_key, "invalid token"),
            ("HS256 keyed with the public JWK", hmac_with_public_jwk, "invalid token"),
            ("garbage", "not-a-jwt".to_owned(), "invalid token"),
        ];
        for (what, token, message) in cases {
            // Even on a public method, a token that is sent must be good.
            let mut catalog = CatalogServiceClient::new(gateway.as_bearer(Some(&token), &[]).await);
            let status = catalog
                .list_products(ListProductsRequest::default())
                .await
                .expect_err(what);
            assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
            assert!(status.message().starts_with(message), "{what}: {:?}", status.message());

            let mut orders = OrderServiceClient::new(gateway.as_bearer(Some(&token), &[]).await);
            let status = refused_place(&mut orders, what, what).await;
            assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        }

        let mut orders = OrderServiceClient::new(gateway.as_bearer(None, &[("authorization", "Basic YTpi")]).await);
        let status = refused_place(&mut orders, "basic", "basic auth").await;
        assert_eq!(status.code(), Code::Unauthenticated);

        // An identity token of the gateway's own, sent by a client without a
        // bearer token, is still nobody: only the gateway vouches, per call.
        let vouched = shop_harness::AsUser::admin("alice").token(PLACE_ORDER);
        let mut orders = OrderServiceClient::new(gateway.as_bearer(None, &[(IDENTITY_HEADER, &vouched)]).await);
        let status = refused_place(&mut orders, "spoof", "no token").await;
        assert_eq!(status.code(), Code::Unauthenticated);

        // Each refusal is counted by why, and every call by method and code.
        let (_, metrics) = shop_infra::http_get(gateway.admin_addr, "/metrics").await.expect("metrics");
        for reason in ["missing", "expired", "invalid"] {
            let line = format!("shop_gateway_auth_failures_total{{reason=\"{reason}\"}}");
            assert!(metrics.contains(&line), "{line} in\n{metrics}");
        }
        assert!(
            metrics.contains(r#"grpc_server_handled_total{grpc_service="shop.order.v1.OrderService",grpc_method="PlaceOrder",grpc_code="Unauthenticated"}"#),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn customers_act_as_their_token_says_and_see_only_their_own_orders() {
    let stack = Stack::start().await.expect("stack");
    let gateway = Gateway::start(stack.url_settings()).await;
    within("customer rules", 120, async {
        let mut anonymous_catalog = CatalogServiceClient::new(gateway.as_bearer(None, &[]).await);
        let products = anonymous_catalog
            .list_products(ListProductsRequest::default())
            .await
            .expect("anonymous ListProducts")
            .into_inner();
        assert!(products.products.len() >= 5, "{products:?}");

        let mut anonymous_orders = OrderServiceClient::new(gateway.as_bearer(None, &[]).await);
        let status = refused_place(&mut anonymous_orders, "anon", "anonymous PlaceOrder").await;
        assert_eq!(status.code(), Code::Unauthenticated);

        // Alice sends an identity token for mallory, an admin: her bearer
        // token wins.
        let alice_token = gateway.idp.token("alice", &["customer"]);
        let mallory = shop_harness::AsUser::admin("mallory").token(PLACE_ORDER);
        let mut alice_spoofing = OrderServiceClient::new(
            gateway
                .as_bearer(Some(&alice_token), &[(IDENTITY_HEADER, &mallory)])
                .await,
        );
        let order = place(&mut alice_spoofing, "alice-1", "PlaceOrder").await;
        assert_eq!(order.user_id, "alice");
        assert_eq!(order.status, OrderStatus::Pending as i32);

        let mut alice = OrderServiceClient::new(gateway.as_user("alice", &["customer"]).await);
        assert_eq!(
            alice
                .get_order(get_order(&order.order_id))
                .await
                .expect("own order")
                .into_inner()
                .order_id,
            order.order_id
        );
        let mut bob = OrderServiceClient::new(gateway.as_user("bob", &["customer"]).await);
        let status = bob
            .get_order(get_order(&order.order_id))
            .await
            .expect_err("someone else's order");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        let bob_token = gateway.idp.token("bob", &["customer"]);
        let as_alice = shop_harness::AsUser::admin("alice").token("/shop.order.v1.OrderService/GetOrder");
        let mut bob_spoofing = OrderServiceClient::new(
            gateway
                .as_bearer(Some(&bob_token), &[(IDENTITY_HEADER, &as_alice)])
                .await,
        );
        let status = bob_spoofing
            .get_order(get_order(&order.order_id))
            .await
            .expect_err("spoofing does not help");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");

        // Keycloak-style realm roles work like the plain claim.
        let mut realm_roles = claims(
            "carol",
            &[],
            json!({"realm_access": {"roles": ["customer", "offline_access"]}}),
        );
        realm_roles.as_object_mut().map(|c| c.remove("roles"));
        let mut carol = OrderServiceClient::new(gateway.as_bearer(Some(&gateway.idp.sign(&realm_roles)), &[]).await);
        let order = place(&mut carol, "carol-1", "realm role").await;
        assert_eq!(order.user_id, "carol");

        // Signed in but without a shop role.
        let mut roleless = OrderServiceClient::new(gateway.as_user("dave", &["offline_access"]).await);
        let status = refused_place(&mut roleless, "dave-1", "no role").await;
        assert_eq!(status.code(), Code::PermissionDenied);

        // Restock is for admins, whatever metadata a customer adds.
        let restock = || RestockRequest {
            sku: "SKU-POSTER-001".into(),
            quantity: 3,
        };
        let as_admin = shop_harness::AsUser::admin("alice").token("/shop.inventory.v1.InventoryService/Restock");
        let mut customer = InventoryServiceClient::new(
            gateway
                .as_bearer(Some(&alice_token), &[(IDENTITY_HEADER, &as_admin)])
                .await,
        );
        let status = customer.restock(restock()).await.expect_err("customer restock");
        assert_eq!(status.code(), Code::PermissionDenied);
        let mut admin = InventoryServiceClient::new(gateway.as_user("ops", &["admin"]).await);
        let stock = admin.restock(restock()).await.expect("admin restock").into_inner();
        assert_eq!(stock.on_hand, 3);
    })
    .await;
}

#[tokio::test]
async fn bursts_over_the_limit_get_resource_exhausted_with_a_retry_hint_per_user() {
    let stack = Stack::start().await.expect("stack");
    let limits = [
        ("RATE_LIMIT_USER_PER_SECOND", "1"),
        ("RATE_LIMIT_USER_BURST", "5"),
        ("RATE_LIMIT_ORDER_PER_SECOND", "1"),
        ("RATE_LIMIT_ORDER_BURST", "2"),
        ("RATE_LIMIT_ANONYMOUS_PER_SECOND", "1"),
        ("RATE_LIMIT_ANONYMOUS_BURST", "3"),
    ];
    let gateway = gateway_with(stack.url_settings(), &limits).await;
    within("rate limits", 120, async {
        let mut alice = CatalogServiceClient::new(gateway.as_user("alice", &["customer"]).await);
        let started = Instant::now();
        let (mut passed, mut refused) = (0u64, Vec::new());
        for _ in 0..15 {
            match alice.list_products(ListProductsRequest::default()).await {
                Ok(_) => passed += 1,
                Err(status) => refused.push(status),
            }
        }
        let allowed = 5 + started.elapsed().as_secs() + 1;
        assert!(
            passed >= 5 && passed <= allowed,
            "passed {passed}, allowed at most {allowed}"
        );
        let status = refused.first().expect("some calls refused");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        for hint in ["retry-after-ms", "grpc-retry-pushback-ms"] {
            let millis: u64 = status
                .metadata()
                .get(hint)
                .unwrap_or_else(|| panic!("{hint} missing"))
                .to_str()
                .expect("ascii")
                .parse()
                .expect("milliseconds");
            assert!(millis > 0 && millis <= 1000, "{hint}={millis}");
        }

        // Bob has his own budget.
        let mut bob = CatalogServiceClient::new(gateway.as_user("bob", &["customer"]).await);
        bob.list_products(ListProductsRequest::default())
            .await
            .expect("another user is unaffected");

        // Orders are stricter than the user's general budget. (Before the
        // anonymous calls below spend the address's budget: a token's first
        // signature check is paid from it.)
        let dave_token = gateway.idp.token("dave", &["customer"]);
        let mut dave = OrderServiceClient::new(gateway.as_bearer(Some(&dave_token), &[]).await);
        let started = Instant::now();
        let mut placed = 0u64;
        let mut order_refusal = None;
        for i in 0..4 {
            match dave.place_order(place_request(&format!("dave-{i}"))).await {
                Ok(_) => placed += 1,
                Err(status) => {
                    order_refusal = Some(status);
                    break;
                }
            }
        }
        assert!(placed <= 2 + started.elapsed().as_secs() + 1, "placed {placed}");
        assert_eq!(
            order_refusal.expect("PlaceOrder limited").code(),
            Code::ResourceExhausted
        );
        let mut dave_catalog = CatalogServiceClient::new(gateway.as_bearer(Some(&dave_token), &[]).await);
        dave_catalog
            .list_products(ListProductsRequest::default())
            .await
            .expect("other calls of the same user still pass");

        // Anonymous callers share their address's budget.
        let mut anonymous = CatalogServiceClient::new(gateway.as_bearer(None, &[]).await);
        let started = Instant::now();
        let mut anonymous_passed = 0u64;
        let mut anonymous_refusal = None;
        for _ in 0..10 {
            match anonymous.list_products(ListProductsRequest::default()).await {
                Ok(_) => anonymous_passed += 1,
                Err(status) => anonymous_refusal = Some(status),
            }
        }
        assert!(
            anonymous_passed <= 3 + started.elapsed().as_secs() + 1,
            "anonymous {anonymous_passed}"
        );
        assert_eq!(
            anonymous_refusal.expect("anonymous calls limited").code(),
            Code::ResourceExhausted
        );
        bob.list_products(ListProductsRequest::default())
            .await
            .expect("signed-in users are counted per user, not per address");

        let (_, metrics) = shop_infra::http_get(gateway.admin_addr, "/metrics")
            .await
            .expect("metrics");
        for limit in ["user", "order", "anonymous"] {
            let line = format!("shop_gateway_rate_limited_total{{limit=\"{limit}\"}}");
            assert!(metrics.contains(&line), "{line} in\n{metrics}");
        }
    })
    .await;
}

#[tokio::test]
async fn grpc_web_over_http1_unary_streaming_and_cors() {
    let stack = Stack::start().await.expect("stack");
    let gateway = gateway_with(stack.url_settings(), &[("CORS_ALLOWED_ORIGINS", "http://shop.test")]).await;
    gateway.channel().await;
    within("gRPC-web", 120, async {
        let reply = grpc_web_call(gateway.addr, LIST_PRODUCTS, &ListProductsRequest::default(), None).await;
        assert_grpc_web_head(reply.http_status, reply.version, &reply.headers);
        assert_eq!(reply.grpc_status(), Some("0"), "{reply:?}");
        assert_eq!(reply.messages.len(), 1);
        let products = ListProductsResponse::decode(reply.messages[0].clone()).expect("ListProductsResponse");
        assert!(products.products.len() >= 5);

        let reply = grpc_web_call(gateway.addr, PLACE_ORDER, &place_request("web-anon"), None).await;
        assert_eq!(reply.grpc_status(), Some("16"), "anonymous PlaceOrder: {reply:?}");

        // Server streaming: the statuses the order passes through reach the
        // browser, ending at CONFIRMED, then the trailers frame with OK.
        let token = gateway.idp.token("alice", &["customer"]);
        let reply = grpc_web_call(gateway.addr, PLACE_ORDER, &place_request("web-1"), Some(&token)).await;
        assert_eq!(reply.grpc_status(), Some("0"), "{reply:?}");
        let order = Order::decode(reply.messages[0].clone()).expect("Order");
        let reply = grpc_web_call(gateway.addr, WATCH_ORDER, &watch_order(&order.order_id), Some(&token)).await;
        assert_grpc_web_head(reply.http_status, reply.version, &reply.headers);
        assert!(
            reply.headers.get("grpc-status").is_none(),
            "a stream's status comes in the trailers frame, not in headers: {reply:?}"
        );
        assert_eq!(reply.grpc_status(), Some("0"), "the stream ends OK: {reply:?}");
        let updates: Vec<Order> = reply
            .messages
            .iter()
            .map(|m| Order::decode(m.clone()).expect("Order"))
            .collect();
        assert!(!updates.is_empty(), "WatchOrder sends the order at once: {reply:?}");
        assert!(updates.iter().all(|o| o.order_id == order.order_id), "{updates:?}");
        let statuses: Vec<i32> = updates.iter().map(|o| o.status).collect();
        assert!(
            statuses.windows(2).all(|pair| pair[0] < pair[1]),
            "each status once, in the order of the state machine: {statuses:?}"
        );
        assert_eq!(
            statuses.last().copied(),
            Some(OrderStatus::Confirmed as i32),
            "a pm_card_ok order of a stocked SKU ends CONFIRMED, and the stream with it: {statuses:?}"
        );
        assert!(
            statuses.iter().all(
                |s| [OrderStatus::Pending, OrderStatus::Reserved, OrderStatus::Confirmed]
                    .iter()
                    .any(|known| *known as i32 == *s)
            ),
            "{statuses:?}"
        );

        // Statuses of the upstream travel in the trailers frame, for unary
        // calls and for streams alike.
        let unknown_order = "00000000-0000-0000-0000-000000000000";
        let reply = grpc_web_call(gateway.addr, GET_ORDER, &get_order(unknown_order), Some(&token)).await;
        assert_eq!(
            reply.grpc_status(),
            Some("5"),
            "GetOrder of an unknown order: {reply:?}"
        );
        let reply = grpc_web_call(gateway.addr, WATCH_ORDER, &watch_order(unknown_order), Some(&token)).await;
        assert_eq!(
            reply.grpc_status(),
            Some("5"),
            "WatchOrder of an unknown order: {reply:?}"
        );
        assert!(reply.messages.is_empty(), "{reply:?}");
        assert!(
            reply.headers.get("grpc-status").is_none(),
            "status in the trailers frame, not in headers"
        );

        // CORS: the configured origin may call and read the status; others not.
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let preflight = |origin: &str| {
            http::Request::options(format!("http://{}{LIST_PRODUCTS}", gateway.addr))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "content-type,x-grpc-web,authorization",
                )
                .body(Full::new(Bytes::new()))
                .expect("preflight")
        };
        let allowed = client.request(preflight("http://shop.test")).await.expect("preflight");
        assert_eq!(allowed.headers()["access-control-allow-origin"], "http://shop.test");
        let allowed_headers = allowed.headers()["access-control-allow-headers"]
            .to_str()
            .expect("ascii");
        assert!(allowed_headers.contains("authorization"), "{allowed_headers}");
        let denied = client.request(preflight("http://evil.test")).await.expect("preflight");
        assert!(denied.headers().get("access-control-allow-origin").is_none());

        let call = http::Request::post(format!("http://{}{LIST_PRODUCTS}", gateway.addr))
            .header("origin", "http://shop.test")
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(Full::new(support::frame(&ListProductsRequest::default())))
            .expect("call");
        let response = client.request(call).await.expect("cross-origin call");
        assert_eq!(response.headers()["access-control-allow-origin"], "http://shop.test");
        let exposed = response.headers()["access-control-expose-headers"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            exposed.contains("grpc-status") && exposed.contains("grpc-message"),
            "{exposed}"
        );
        let body = response.into_body().collect().await.expect("body").to_bytes();
        let (_, trailers) = support::parse_grpc_web(body);
        assert_eq!(trailers.expect("trailers frame")["grpc-status"], "0");
    })
    .await;
}

#[tokio::test]
async fn a_stopped_upstream_fails_fast_and_recovers_without_a_restart() {
    let mut stack = Stack::start().await.expect("stack");
    let breaker = [
        ("UPSTREAM_BREAKER_FAILURES", "3"),
        ("UPSTREAM_BREAKER_COOL_DOWN", "300ms"),
    ];
    let gateway = gateway_with(stack.url_settings(), &breaker).await;
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    let payment_service = "shop.payment.v1.PaymentService";
    let get_payment = || GetPaymentRequest {
        order_id: "00000000-0000-0000-0000-000000000000".into(),
    };

    let mut payments = PaymentServiceClient::new(gateway.as_user("alice", &["customer"]).await);
    let status = within("first call", 30, payments.get_payment(get_payment()))
        .await
        .expect_err("no such payment");
    assert_eq!(status.code(), Code::NotFound, "the upstream answers: {status:?}");
    within("payment healthy", 30, async {
        eventually("payment serving", || async {
            Ok((health_of(&gateway, payment_service).await == Some(serving)).then_some(()))
        })
        .await
        .expect("payment reported serving");
    })
    .await;

    stack.stop_service(Service::Payment).await.expect("stop payment");

    let mut slowest = Duration::ZERO;
    let mut failed_fast = 0;
    let mut others = Vec::new();
    let mut answered_after_first_failure = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let outcome = within("a call to a dead upstream", 5, payments.get_payment(get_payment())).await;
        slowest = slowest.max(started.elapsed());
        match outcome {
            Err(status) if status.code() == Code::Unavailable && status.message() == "system busy, try later" => {
                failed_fast += 1;
            }
            other => {
                if failed_fast > 0 {
                    answered_after_first_failure += 1;
                }
                others.push(format!("{other:?}"));
            }
        }
    }
    // A connection the stopped service was draining may answer one or two
    // calls right after the stop; after that, everything fails fast.
    assert!(
        failed_fast >= 18,
        "calls to the stopped service fail fast; others: {others:?}"
    );
    assert!(
        answered_after_first_failure == 0,
        "once failing, it keeps failing fast: {others:?}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "slowest failing call took {slowest:?}"
    );

    within("others unaffected", 30, async {
        let mut catalog = CatalogServiceClient::new(gateway.as_bearer(None, &[]).await);
        catalog
            .list_products(ListProductsRequest::default())
            .await
            .expect("other upstreams still work");
        eventually("health to notice", || async {
            let payment = health_of(&gateway, payment_service).await;
            let catalog = health_of(&gateway, "shop.catalog.v1.CatalogService").await;
            let overall = health_of(&gateway, "").await;
            Ok(
                (payment == Some(not_serving) && catalog == Some(serving) && overall == Some(not_serving))
                    .then_some(()),
            )
        })
        .await
        .expect("health reports the dead upstream only");
    })
    .await;

    stack.start_service(Service::Payment).await.expect("restart payment");
    within("recovery", 60, async {
        eventually("payment to answer through the gateway again", || {
            let mut payments = payments.clone();
            async move {
                match payments.get_payment(get_payment()).await {
                    Err(status) if status.code() == Code::NotFound => Ok(Some(())),
                    _ => Ok(None),
                }
            }
        })
        .await
        .expect("recovered without restarting the gateway");
        eventually("payment serving again", || async {
            Ok((health_of(&gateway, payment_service).await == Some(serving)).then_some(()))
        })
        .await
        .expect("health recovers");
    })
    .await;
}

#[tokio::test]
async fn dev_tokens_are_issued_when_enabled_and_accepted_end_to_end() {
    let stack = Stack::start().await.expect("stack");
    let dev_only = [
        ("DEV_AUTH", "on"),
        ("JWKS_FILE", ""),
        ("JWT_ISSUER", ""),
        ("JWT_AUDIENCE", ""),
    ];
    let gateway = gateway_with(stack.url_settings(), &dev_only).await;
    within("dev tokens", 120, async {
        let mut dev = DevAuthServiceClient::new(gateway.as_bearer(None, &[]).await);
        let issued = dev
            .issue_token(token_request("dev-alice", "customer"))
            .await
            .expect("IssueToken with DEV_AUTH=on")
            .into_inner();
        let expires = issued.expires_at.expect("expiry").seconds;
        assert!((expires - now() - 3600).abs() < 60, "tokens last an hour");

        let mut orders = OrderServiceClient::new(gateway.as_bearer(Some(&issued.access_token), &[]).await);
        let order = place(&mut orders, "dev-1", "dev token accepted").await;
        assert_eq!(order.user_id, "dev-alice");

        // Tokens of the configured identity provider are not accepted by a
        // dev-only gateway (no JWKS), and dev tokens carry the dev issuer.
        let foreign = gateway.idp.token("alice", &["customer"]);
        let mut foreign_orders = OrderServiceClient::new(gateway.as_bearer(Some(&foreign), &[]).await);
        let status = refused_place(&mut foreign_orders, "foreign", "unknown key").await;
        assert_eq!(status.code(), Code::Unauthenticated);
        let payload = issued.access_token.split('.').nth(1).expect("payload");
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).expect("base64"),
        )
        .expect("json");
        assert_eq!(claims["iss"], svc_gateway::config::DEV_ISSUER);
        assert_eq!(claims["aud"], svc_gateway::config::DEV_AUDIENCE);

        let admin = dev
            .issue_token(token_request("dev-ops", "admin"))
            .await
            .expect("admin token")
            .into_inner();
        let mut inventory = InventoryServiceClient::new(gateway.as_bearer(Some(&admin.access_token), &[]).await);
        inventory
            .restock(RestockRequest {
                sku: "SKU-BAG-001".into(),
                quantity: 1,
            })
            .await
            .expect("dev admin may restock");
    })
    .await;
}

#[tokio::test]
async fn oversized_and_malformed_requests_get_clean_grpc_errors() {
    let stack = Stack::start().await.expect("stack");
    let gateway = gateway_with(stack.url_settings(), &[("MAX_MESSAGE_BYTES", "1024")]).await;
    gateway.channel().await;
    within("malformed requests", 120, async {
        let h2 = h2_client();
        let send = |path: &str, content_type: &str, body: Bytes| {
            let request = raw_grpc(&gateway, path, content_type)
                .body(Full::new(body))
                .expect("request");
            let h2 = h2.clone();
            async move {
                let response = h2
                    .request(request)
                    .await
                    .expect("an HTTP answer, not a dropped connection");
                let status = response.status();
                let headers = response.headers().clone();
                let collected = response.into_body().collect().await.expect("body");
                let grpc_status = collected
                    .trailers()
                    .and_then(|t| t.get("grpc-status").cloned())
                    .or_else(|| headers.get("grpc-status").cloned());
                (status, grpc_status.map(|v| v.to_str().expect("ascii").to_owned()))
            }
        };
        let list = support::frame(&ListProductsRequest::default());

        let (http_status, grpc) = send(LIST_PRODUCTS, "text/plain", list.clone()).await;
        assert_eq!(http_status, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(grpc.as_deref(), Some("3"));
        let (_, grpc) = send("/nonsense", "application/grpc", list.clone()).await;
        assert_eq!(grpc.as_deref(), Some("12"), "bad path");
        let (_, grpc) = send("/shop.order.v1.OrderService/Nope", "application/grpc", list.clone()).await;
        assert_eq!(grpc.as_deref(), Some("12"), "unknown method");
        let (_, grpc) = send(LIST_PRODUCTS, "application/grpc", list.clone()).await;
        assert_eq!(grpc.as_deref(), Some("0"), "a well-formed raw call works");

        let big = ListProductsRequest {
            skus: (0..200).map(|i| format!("SKU-{i:08}")).collect(),
            ..Default::default()
        };
        assert!(big.encoded_len() > 1024);
        // With a content-length: refused before the upstream is involved.
        let (_, grpc) = send(LIST_PRODUCTS, "application/grpc", support::frame(&big)).await;
        assert_eq!(grpc.as_deref(), Some("8"), "declared too large");
        // A length prefix lying about the size is caught in the stream.
        let mut lying = vec![0u8];
        lying.extend_from_slice(&(1_000_000u32).to_be_bytes());
        lying.extend_from_slice(&[0u8; 16]);
        let (_, grpc) = send(LIST_PRODUCTS, "application/grpc", Bytes::from(lying)).await;
        assert_eq!(grpc.as_deref(), Some("8"), "prefix over the limit");
        // Streamed by a normal client (no content-length).
        let mut catalog = CatalogServiceClient::new(gateway.as_bearer(None, &[]).await);
        let status = catalog.list_products(big).await.expect_err("too large");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

        // Still serving.
        catalog
            .list_products(ListProductsRequest::default())
            .await
            .expect("the gateway is fine");
    })
    .await;
}

/// A JWKS endpoint whose key set the test can change, counting fetches.
async fn serve_jwks(keys: Arc<Mutex<serde_json::Value>>, fetches: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let keys = keys.clone();
            let fetches = fetches.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let body = keys.lock().expect("keys").to_string();
                    async move { Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/realms/shop/protocol/openid-connect/certs")
}

#[tokio::test]
async fn keys_from_a_url_are_refetched_for_an_unknown_kid_at_a_limited_rate() {
    let first = TestIdp::new("first");
    let second = TestIdp::new("second");
    let keys = Arc::new(Mutex::new(json!({"keys": [first.public_jwk()]})));
    let fetches = Arc::new(AtomicUsize::new(0));
    let url = serve_jwks(keys.clone(), fetches.clone()).await;
    let jwks = [
        ("JWKS_FILE", ""),
        ("JWKS_URL", url.as_str()),
        ("JWKS_MIN_REFRESH_INTERVAL", "500ms"),
    ];
    let gateway = gateway_with(no_upstreams(), &jwks).await;
    within("JWKS over HTTP", 30, async {
        // Health is served by the gateway itself: a good token passes, a bad
        // one is refused, whatever the upstreams.
        let gateway = &gateway;
        let check = move |token: String| async move {
            let channel = gateway.as_bearer(Some(&token), &[]).await;
            HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        };
        assert_eq!(check(first.token("alice", &["customer"])).await, Ok(()));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        keys.lock()
            .expect("keys")
            .clone_from(&json!({"keys": [first.public_jwk(), second.public_jwk()]}));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(check(second.token("alice", &["customer"])).await, Ok(()), "rotated in");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);

        let stranger = TestIdp::new("stranger");
        for _ in 0..10 {
            assert_eq!(
                check(stranger.token("alice", &["customer"])).await,
                Err(Code::Unauthenticated)
            );
        }
        assert!(
            fetches.load(Ordering::SeqCst) <= 3,
            "unknown kids must not hammer the identity provider: {} fetches",
            fetches.load(Ordering::SeqCst)
        );
    })
    .await;
}

/// An HTTP/2 server on a free port that answers every call with what
/// `answer` makes: a stand-in for svc-cart.
async fn fake_upstream<F, A>(answer: F) -> SocketAddr
where
    F: Fn() -> A + Clone + Send + 'static,
    A: Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let answer = answer();
                    async move { Ok::<_, std::convert::Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The gateway with svc-cart at `cart` (every other upstream dead), whose
/// breaker opens after two failures and stays open past the test, with
/// `extra` settings.
async fn gateway_to_cart(cart: SocketAddr, extra: &[(&str, &str)]) -> Gateway {
    let cart_url = format!("http://{cart}");
    let breaker = [
        ("CART_URL", cart_url.as_str()),
        ("UPSTREAM_BREAKER_FAILURES", "2"),
        ("UPSTREAM_BREAKER_COOL_DOWN", "10s"),
    ];
    gateway_with(no_upstreams(), &[&breaker[..], extra].concat()).await
}

/// A client speaking HTTP/2 only, as gRPC does, for calls made by hand.
fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>()
}

/// A gRPC call to `path` made by hand, short of its body.
fn raw_grpc(gateway: &Gateway, path: &str, content_type: &str) -> http::request::Builder {
    http::Request::post(format!("http://{}{path}", gateway.addr))
        .header("content-type", content_type)
        .header("te", "trailers")
}

#[tokio::test]
async fn a_hung_upstream_meets_the_deadline_then_the_breaker_fails_fast() {
    use shop_proto::cart::v1::{GetCartRequest, cart_service_client::CartServiceClient};

    // Speaks HTTP/2 and never answers a call.
    let hung_addr = fake_upstream(std::future::pending).await;
    let gateway = gateway_to_cart(hung_addr, &[("REQUEST_TIMEOUT", "400ms")]).await;
    let mut carts = CartServiceClient::new(gateway.as_user("alice", &["customer"]).await);
    let timed = |started: Instant| started.elapsed();

    // The client's shorter deadline wins, and does not count against the
    // upstream. A raw HTTP/2 call, so that only the gateway enforces it.
    let h2 = h2_client();
    let request = raw_grpc(&gateway, "/shop.cart.v1.CartService/GetCart", "application/grpc")
        .header("grpc-timeout", "150m")
        .header(
            "authorization",
            format!("Bearer {}", gateway.idp.token("alice", &["customer"])),
        )
        .body(Full::new(support::frame(&GetCartRequest::default())))
        .expect("request");
    let started = Instant::now();
    let response = within("client deadline", 5, h2.request(request))
        .await
        .expect("an answer");
    assert_eq!(response.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert!(timed(started) < Duration::from_millis(390), "{:?}", timed(started));

    // The gateway's own deadline, twice: that opens the breaker...
    for _ in 0..2 {
        let started = Instant::now();
        let status = within("gateway deadline", 5, carts.get_cart(GetCartRequest::default()))
            .await
            .expect_err("hung");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(timed(started) < Duration::from_secs(1), "{:?}", timed(started));
    }
    // ...and then calls fail fast without waiting.
    let started = Instant::now();
    let status = within("breaker", 5, carts.get_cart(GetCartRequest::default()))
        .await
        .expect_err("open");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "system busy, try later");
    assert!(timed(started) < Duration::from_millis(300), "{:?}", timed(started));
}

#[tokio::test]
async fn an_upstream_answering_unavailable_for_its_own_dependency_keeps_its_breaker_closed() {
    use shop_proto::cart::v1::{GetCartRequest, cart_service_client::CartServiceClient};

    // Answers every call at once with UNAVAILABLE, as svc-cart does while
    // its own dependency (Redis, svc-order) is down: it is up and answering.
    let addr = fake_upstream(|| async {
        http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .header("grpc-message", "carts are unavailable right now")
            .body(Full::new(Bytes::new()))
            .expect("response")
    })
    .await;
    let gateway = gateway_to_cart(addr, &[]).await;
    let mut carts = CartServiceClient::new(gateway.as_user("alice", &["customer"]).await);

    // Well past the threshold: every answer is the upstream's own, none the
    // open breaker's.
    for _ in 0..5 {
        let status = within("an answer", 5, carts.get_cart(GetCartRequest::default()))
            .await
            .expect_err("unavailable");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "carts are unavailable right now");
    }
}

#[tokio::test]
async fn the_storefront_is_served_to_plain_gets_beside_grpc_on_one_port() {
    let site = tempfile::tempdir().expect("tempdir");
    std::fs::write(site.path().join("index.html"), "<h1>Shop</h1>").expect("index.html");
    std::fs::write(site.path().join("app.js"), "export {};").expect("app.js");
    let dir = site.path().display().to_string();
    let gateway = gateway_with(no_upstreams(), &[("STOREFRONT_DIR", &dir)]).await;
    gateway.channel().await;
    within("the storefront", 30, async {
        let (code, body) = shop_infra::http_get(gateway.addr, "/").await.expect("GET /");
        assert_eq!((code, body.as_str()), (200, "<h1>Shop</h1>"));
        let (code, _) = shop_infra::http_get(gateway.addr, "/app.js")
            .await
            .expect("GET /app.js");
        assert_eq!(code, 200);
        let (code, _) = shop_infra::http_get(gateway.addr, "/nothing-here.js")
            .await
            .expect("GET missing");
        assert_eq!(code, 404);
        // gRPC (always a POST) still reaches the edge on the same port.
        assert!(health_of(&gateway, "").await.is_some(), "gRPC health answers");
    })
    .await;

    let empty = tempfile::tempdir().expect("tempdir");
    let error = svc_gateway::Config::read(shop_runtime::config::EnvReader::from_map([
        ("DEV_AUTH", "on"),
        ("STOREFRONT_DIR", &*empty.path().display().to_string()),
    ]))
    .expect_err("a storefront without its index.html");
    assert!(error.to_string().contains("STOREFRONT_DIR="), "{error}");
}

/// The directives of a `Content-Security-Policy`, each with its sources.
fn csp_directives(policy: &str) -> std::collections::HashMap<String, Vec<String>> {
    policy
        .split(';')
        .filter_map(|directive| {
            let mut words = directive.split_whitespace();
            let name = words.next()?.to_ascii_lowercase();
            Some((name, words.map(str::to_owned).collect()))
        })
        .collect()
}

#[tokio::test]
async fn storefront_responses_confine_the_page_to_what_it_loads() {
    let site = tempfile::tempdir().expect("tempdir");
    std::fs::write(site.path().join("index.html"), "<h1>Shop</h1>").expect("index.html");
    std::fs::write(site.path().join("app.js"), "export {};").expect("app.js");
    // A deployment's page signs in with an OpenID provider: it fetches the
    // provider's discovery document and token endpoint.
    std::fs::write(
        site.path().join("config.json"),
        json!({"auth": {"kind": "oidc", "issuer": "https://id.shop.example/realms/shop", "clientId": "shop-web"}})
            .to_string(),
    )
    .expect("config.json");
    let dir = site.path().display().to_string();
    let gateway = gateway_with(no_upstreams(), &[("STOREFRONT_DIR", &dir)]).await;
    gateway.channel().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    within("the storefront", 30, async {
        for (path, code) in [
            ("/", 200),
            ("/app.js", 200),
            ("/config.json", 200),
            ("/nothing-here.js", 404),
        ] {
            let uri: http::Uri = format!("http://{}{path}", gateway.addr).parse().expect("uri");
            let response = client.get(uri).await.expect("GET");
            assert_eq!(response.status().as_u16(), code, "{path}");
            let headers = response.headers();
            let header = |name: &str| {
                headers
                    .get(name)
                    .unwrap_or_else(|| panic!("{path}: no {name} header"))
                    .to_str()
                    .expect("ascii")
                    .to_owned()
            };
            let policy = header("content-security-policy");
            let directives = csp_directives(&policy);
            let sources = |name: &str| directives.get(name).cloned().unwrap_or_default();
            for (name, expected) in [
                ("default-src", vec!["'none'"]),
                ("script-src", vec!["'self'"]),
                ("style-src", vec!["'self'"]),
                // gRPC-web on this origin, and the provider's origin.
                ("connect-src", vec!["'self'", "https://id.shop.example"]),
                ("base-uri", vec!["'self'"]),
                ("form-action", vec!["'self'"]),
                ("frame-ancestors", vec!["'none'"]),
                ("object-src", vec!["'none'"]),
            ] {
                assert_eq!(sources(name), expected, "{path}: {name} in {policy}");
            }
            assert!(!policy.contains("unsafe"), "{path}: {policy}");
            assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
            assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
            assert_eq!(header("x-frame-options"), "DENY", "{path}");
        }
    })
    .await;
}

/// A rolling restart, seen from the gateway: of two replicas of svc-order,
/// one drains (SIGTERM) while calls keep coming; none of them fails, and the
/// other replica takes them all.
#[tokio::test]
async fn a_replica_that_drains_gets_no_new_calls_and_none_fails() {
    let stack = Stack::start().await.expect("stack");
    let (replica_url, replica) = stack
        .order_replica_with(&[("SHUTDOWN_GRACE_PERIOD", "5s")])
        .await
        .expect("a second svc-order");
    let both = format!("{},{replica_url}", stack.grpc_url(Service::Order));
    let gateway = gateway_with(stack.url_settings(), &[("ORDER_URL", &both)]).await;
    let orders = OrderServiceClient::new(gateway.as_user("alice", &["customer"]).await);
    within("both replicas serving", 30, async {
        eventually("svc-order serving through the gateway", || async {
            let serving = health_of(&gateway, "shop.order.v1.OrderService").await;
            Ok((serving == Some(ServingStatus::Serving as i32)).then_some(()))
        })
        .await
        .expect("svc-order serving");
        // Each endpoint's health watch has had its first answer.
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;

    let calls = async {
        let mut failures = Vec::new();
        let mut answered = 0;
        for _ in 0..300 {
            let mut orders = orders.clone();
            match orders.list_orders(ListOrdersRequest::default()).await {
                Ok(_) => answered += 1,
                Err(status) => failures.push(format!("{:?}: {}", status.code(), status.message())),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (answered, failures)
    };
    let drain = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        replica.cancel();
    };
    let ((answered, failures), ()) = within("calls across a drain", 60, async { tokio::join!(calls, drain) }).await;
    assert!(
        failures.is_empty(),
        "{} of 300 calls failed: {failures:?}",
        failures.len()
    );
    assert_eq!(answered, 300);
}
