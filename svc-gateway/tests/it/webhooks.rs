//! `POST /webhooks/payments` on the gateway's public port, against a real
//! gateway and a real upstream: a gRPC server in the test that serves
//! `PaymentWebhookService` (and health), as svc-payment does, keeps what
//! it receives and answers as the test tells it.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use shop_proto::payment::v1::{
    ReceiveWebhookRequest, ReceiveWebhookResponse,
    payment_webhook_service_client::PaymentWebhookServiceClient,
    payment_webhook_service_server::{PaymentWebhookService, PaymentWebhookServiceServer},
};
use shop_runtime::{CancellationToken, identity::IDENTITY_HEADER};
use svc_gateway::webhooks::{MAX_BODY_BYTES, PATH};
use tonic::{Code, Status};

use crate::support::{Gateway, no_upstreams, now, within};

/// What the intake answers, after how long.
#[derive(Clone)]
struct Reply {
    code: Code,
    message: &'static str,
    delay: Duration,
}

impl Reply {
    fn now(code: Code, message: &'static str) -> Self {
        Self {
            code,
            message,
            delay: Duration::ZERO,
        }
    }
}

/// One webhook as the intake received it: the call's metadata and message.
#[derive(Debug, Clone)]
struct Received {
    metadata: http::HeaderMap,
    request: ReceiveWebhookRequest,
}

#[derive(Clone)]
struct IntakeApi {
    received: Arc<Mutex<Vec<Received>>>,
    reply: Arc<Mutex<Reply>>,
}

#[tonic::async_trait]
impl PaymentWebhookService for IntakeApi {
    async fn receive_webhook(
        &self,
        request: tonic::Request<ReceiveWebhookRequest>,
    ) -> Result<tonic::Response<ReceiveWebhookResponse>, Status> {
        let metadata = request.metadata().clone().into_headers();
        self.received.lock().expect("received").push(Received {
            metadata,
            request: request.into_inner(),
        });
        let reply = self.reply.lock().expect("reply").clone();
        tokio::time::sleep(reply.delay).await;
        match reply.code {
            Code::Ok => Ok(tonic::Response::new(ReceiveWebhookResponse {})),
            code => Err(Status::new(code, reply.message)),
        }
    }
}

/// svc-payment's webhook intake, in the test.
struct Intake {
    url: String,
    api: IntakeApi,
    stop: CancellationToken,
}

impl Intake {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let api = IntakeApi {
            received: Arc::default(),
            reply: Arc::new(Mutex::new(Reply::now(Code::Ok, ""))),
        };
        let (_reporter, health) = tonic_health::server::health_reporter();
        let stop = CancellationToken::new();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(PaymentWebhookServiceServer::new(api.clone()))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    stop.clone().cancelled_owned(),
                ),
        );
        Self { url, api, stop }
    }

    fn answer(&self, reply: Reply) {
        *self.api.reply.lock().expect("reply") = reply;
    }

    fn received(&self) -> Vec<Received> {
        self.api.received.lock().expect("received").clone()
    }

    /// The gateway with svc-payment here (every other upstream dead), and
    /// `extra` settings.
    async fn gateway(&self, extra: &[(&str, &str)]) -> Gateway {
        let mut settings = no_upstreams();
        settings.retain(|(key, _)| key != "PAYMENT_URL");
        settings.push(("PAYMENT_URL".to_owned(), self.url.clone()));
        settings.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let gateway = Gateway::start(settings).await;
        gateway.channel().await;
        gateway
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn http1() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn http2() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// A webhook as a provider signs it (the signature is svc-payment's to
/// check, not the gateway's).
fn webhook(gateway: &Gateway) -> http::request::Builder {
    http::Request::post(format!("http://{}{PATH}", gateway.addr))
        .header("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")
        .header("webhook-timestamp", "1733616000")
        .header("webhook-signature", "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=")
        .header("content-type", "application/json")
}

/// Sends `request` and reads the whole answer: its status, headers and body.
async fn send(
    client: &Client<HttpConnector, Body>,
    request: http::Request<Body>,
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let response = within("the gateway's answer", 20, client.request(request))
        .await
        .expect("an HTTP answer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the answer's body").to_bytes();
    (parts.status, parts.headers, body)
}

/// The bytes a provider sends: its JSON exactly as written (spacing,
/// escapes and non-ASCII text are the signature's, not the gateway's).
const EVENT: &[u8] =
    b"{\"type\": \"payment_intent.succeeded\",\n  \"data\":{\"id\":\"pi_1\", \"note\":\"Zo\xc3\xab \\u00e9 \\\"q\\\"\"}}  \n";

#[tokio::test]
async fn a_webhook_reaches_svc_payment_byte_for_byte_and_its_answer_becomes_the_http_status() {
    let intake = Intake::start().await;
    let gateway = intake.gateway(&[]).await;
    let client = http1();
    within("webhooks", 60, async {
        // Whatever else the provider (or a proxy) adds stays at the edge.
        let request = webhook(&gateway)
            .header(
                "authorization",
                format!("Bearer {}", gateway.idp.token("ops", &["admin"])),
            )
            .header(IDENTITY_HEADER, "forged")
            .header("cookie", "session=1")
            .header("x-forwarded-for", "203.0.113.9")
            .header("user-agent", "Svix-Webhooks/1.0")
            .body(full(EVENT))
            .expect("request");
        let (status, headers, body) = send(&client, request).await;
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(&body[..], b"{}");

        let received = intake.received();
        assert_eq!(received.len(), 1, "{received:?}");
        let Received { metadata, request } = &received[0];
        assert_eq!(request.body, EVENT, "the body arrives byte for byte");
        let mut forwarded: Vec<(&str, &str)> = request.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        forwarded.sort_unstable();
        assert_eq!(
            forwarded,
            [
                ("content-type", "application/json"),
                ("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
                ("webhook-signature", "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="),
                ("webhook-timestamp", "1733616000"),
            ]
        );
        // No one is vouched for: the signature speaks for the webhook.
        for absent in [IDENTITY_HEADER, "authorization", "cookie"] {
            assert!(
                metadata.get(absent).is_none(),
                "{absent} reached svc-payment: {metadata:?}"
            );
        }

        // Each of svc-payment's verdicts, as the provider acts on it; its
        // reason stays in the gateway's log.
        for (code, expected) in [
            (Code::Unauthenticated, http::StatusCode::UNAUTHORIZED),
            (Code::InvalidArgument, http::StatusCode::BAD_REQUEST),
            (Code::Unavailable, http::StatusCode::SERVICE_UNAVAILABLE),
            (Code::Internal, http::StatusCode::SERVICE_UNAVAILABLE),
            (Code::DeadlineExceeded, http::StatusCode::SERVICE_UNAVAILABLE),
            (Code::Ok, http::StatusCode::OK),
        ] {
            intake.answer(Reply::now(code, "signature v1 does not match secret whsec_abc"));
            let request = webhook(&gateway).body(full(EVENT)).expect("request");
            let (status, _, body) = send(&client, request).await;
            assert_eq!(status, expected, "{code:?}");
            if code == Code::Ok {
                assert_eq!(&body[..], b"{}");
            } else {
                assert!(body.is_empty(), "{code:?}: a refusal says nothing: {body:?}");
            }
        }
        assert_eq!(intake.received().len(), 7);

        // HTTP/2 reaches the same route.
        let request = webhook(&gateway).body(full(EVENT)).expect("request");
        let (status, _, body) = send(&http2(), request).await;
        assert_eq!((status, &body[..]), (http::StatusCode::OK, &b"{}"[..]));
        let received = intake.received();
        assert_eq!(received.last().expect("the HTTP/2 webhook").request.body, EVENT);

        let (_, metrics) = shop_infra::http_get(gateway.admin_addr, "/metrics")
            .await
            .expect("metrics");
        assert!(
            metrics.contains("shop_webhooks_total{result=\"forwarded\"}"),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_webhook_over_the_cap_is_refused_unread_and_never_forwarded() {
    let intake = Intake::start().await;
    let gateway = intake.gateway(&[]).await;
    let client = http1();
    within("oversized webhooks", 60, async {
        // Declared too long: refused on its length.
        let too_long = vec![b' '; MAX_BODY_BYTES + 1];
        let request = webhook(&gateway).body(full(too_long)).expect("request");
        let (status, _, body) = send(&client, request).await;
        assert_eq!(status, http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body.is_empty());

        // Chunked, with no length declared: refused once past the cap.
        let chunks = [
            vec![b' '; MAX_BODY_BYTES / 2],
            vec![b' '; MAX_BODY_BYTES / 2],
            vec![b' '; 1],
        ]
        .map(|chunk| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(chunk))));
        let chunked = StreamBody::new(futures::stream::iter(chunks)).boxed();
        let request = http::Request::post(format!("http://{}{PATH}", gateway.addr))
            .header("webhook-id", "msg_chunked")
            .header("content-type", "application/json")
            .body(chunked)
            .expect("request");
        let (status, _, _) = send(&client, request).await;
        assert_eq!(status, http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(intake.received().is_empty(), "an oversized webhook was forwarded");

        // Up to the cap is taken.
        let at_cap = vec![b' '; MAX_BODY_BYTES];
        let request = webhook(&gateway).body(full(at_cap)).expect("request");
        let (status, _, _) = send(&client, request).await;
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(intake.received().len(), 1);
        assert_eq!(intake.received()[0].request.body.len(), MAX_BODY_BYTES);

        let (_, metrics) = shop_infra::http_get(gateway.admin_addr, "/metrics")
            .await
            .expect("metrics");
        assert!(
            metrics.contains("shop_webhooks_total{result=\"too_large\"}"),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn only_post_is_allowed_and_neither_the_storefront_nor_cors_touch_the_route() {
    let site = tempfile::tempdir().expect("tempdir");
    std::fs::write(site.path().join("index.html"), "<h1>Shop</h1>").expect("index.html");
    let dir = site.path().display().to_string();
    let intake = Intake::start().await;
    let gateway = intake
        .gateway(&[("STOREFRONT_DIR", &dir), ("CORS_ALLOWED_ORIGINS", "http://shop.test")])
        .await;
    let client = http1();
    within("methods", 30, async {
        for method in [
            http::Method::GET,
            http::Method::HEAD,
            http::Method::PUT,
            http::Method::DELETE,
            http::Method::OPTIONS,
        ] {
            let request = http::Request::builder()
                .method(method.clone())
                .uri(format!("http://{}{PATH}", gateway.addr))
                .header("origin", "http://shop.test")
                .header("access-control-request-method", "POST")
                .body(full(Bytes::new()))
                .expect("request");
            let (status, headers, body) = send(&client, request).await;
            assert_eq!(status, http::StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(headers["allow"], "POST", "{method}");
            assert!(body.is_empty(), "{method}: {body:?}");
            for foreign in ["content-security-policy", "access-control-allow-origin"] {
                assert!(
                    headers.get(foreign).is_none(),
                    "{method}: {foreign} on the webhook route"
                );
            }
        }
        assert!(intake.received().is_empty());

        // A POST from a page's origin is no CORS call here either.
        let request = webhook(&gateway)
            .header("origin", "http://shop.test")
            .body(full(EVENT))
            .expect("request");
        let (status, headers, _) = send(&client, request).await;
        assert_eq!(status, http::StatusCode::OK);
        assert!(headers.get("access-control-allow-origin").is_none());

        // Only the exact path: the storefront keeps the rest.
        let (code, _) = shop_infra::http_get(gateway.addr, "/").await.expect("GET /");
        assert_eq!(code, 200);
        let (code, _) = shop_infra::http_get(gateway.addr, &format!("{PATH}/other"))
            .await
            .expect("GET beside the route");
        assert_eq!(code, 404, "the storefront answers beside the route");
    })
    .await;
}

#[tokio::test]
async fn without_svc_payment_or_its_answer_in_time_a_webhook_is_503_for_the_provider_to_retry() {
    // Nothing listens where svc-payment should be.
    let gateway = Gateway::start(no_upstreams()).await;
    gateway.channel().await;
    let client = http1();
    within("no svc-payment", 30, async {
        for _ in 0..3 {
            let started = Instant::now();
            let request = webhook(&gateway).body(full(EVENT)).expect("request");
            let (status, _, body) = send(&client, request).await;
            assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
            assert!(body.is_empty());
            assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        }
        let (_, metrics) = shop_infra::http_get(gateway.admin_addr, "/metrics")
            .await
            .expect("metrics");
        assert!(
            metrics.contains("shop_webhooks_total{result=\"upstream_unavailable\"}"),
            "{metrics}"
        );
    })
    .await;

    // svc-payment there, but slower than the gateway's deadline.
    let intake = Intake::start().await;
    intake.answer(Reply {
        code: Code::Ok,
        message: "",
        delay: Duration::from_secs(10),
    });
    let gateway = intake.gateway(&[("REQUEST_TIMEOUT", "300ms")]).await;
    within("a slow svc-payment", 30, async {
        let started = Instant::now();
        let request = webhook(&gateway).body(full(EVENT)).expect("request");
        let (status, _, _) = send(&client, request).await;
        assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    })
    .await;
}

#[tokio::test]
async fn a_peer_past_its_anonymous_budget_gets_429_and_nothing_is_forwarded() {
    let intake = Intake::start().await;
    let gateway = intake
        .gateway(&[
            ("RATE_LIMIT_ANONYMOUS_PER_SECOND", "1"),
            ("RATE_LIMIT_ANONYMOUS_BURST", "3"),
        ])
        .await;
    let client = http1();
    within("a flood", 30, async {
        let started = Instant::now();
        let mut statuses = Vec::new();
        let mut retry_after = None;
        for _ in 0..10 {
            let request = webhook(&gateway).body(full(EVENT)).expect("request");
            let (status, headers, body) = send(&client, request).await;
            if status == http::StatusCode::TOO_MANY_REQUESTS {
                assert!(body.is_empty());
                retry_after = headers.get("retry-after").cloned();
            }
            statuses.push(status);
        }
        let passed = statuses.iter().filter(|s| **s == http::StatusCode::OK).count();
        let limited = statuses
            .iter()
            .filter(|s| **s == http::StatusCode::TOO_MANY_REQUESTS)
            .count();
        let allowed = 3 + usize::try_from(started.elapsed().as_secs()).expect("seconds") + 1;
        assert!(passed >= 3 && passed <= allowed, "{statuses:?}");
        assert_eq!(passed + limited, 10, "{statuses:?}");
        let seconds: u64 = retry_after
            .expect("a Retry-After on 429")
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=2).contains(&seconds), "Retry-After: {seconds}");
        assert_eq!(
            intake.received().len(),
            passed,
            "only the webhooks let through were forwarded"
        );

        let (_, metrics) = shop_infra::http_get(gateway.admin_addr, "/metrics")
            .await
            .expect("metrics");
        assert!(
            metrics.contains("shop_webhooks_total{result=\"rate_limited\"}"),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn receive_webhook_called_as_grpc_on_the_gateway_is_refused_even_for_an_admin() {
    let intake = Intake::start().await;
    let gateway = intake.gateway(&[]).await;
    within("the internal method", 30, async {
        for channel in [
            gateway.as_user("ops", &["admin"]).await,
            gateway.as_user("alice", &["customer"]).await,
            gateway.as_bearer(None, &[]).await,
        ] {
            let refused = PaymentWebhookServiceClient::new(channel)
                .receive_webhook(ReceiveWebhookRequest {
                    headers: [("webhook-id".to_owned(), "msg_1".to_owned())].into(),
                    body: EVENT.to_vec(),
                })
                .await
                .expect_err("an internal method");
            assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        }
        assert!(intake.received().is_empty(), "the internal method was forwarded");
    })
    .await;
}

/// The whole way, with the real svc-payment of a stack (and the secret the
/// stack's provider signs with): what the gateway hands on verifies there,
/// byte for byte, and svc-payment's verdicts come back as the provider
/// needs them.
#[tokio::test]
async fn signed_webhooks_through_the_gateway_meet_the_real_svc_payment() {
    let stack = shop_harness::Stack::start().await.expect("stack");
    let gateway = Gateway::start(stack.url_settings()).await;
    gateway.channel().await;
    let client = http1();
    let secret = stack.provider.webhook_secret();
    let signed = |id: &str, timestamp: i64, body: &'static [u8], by: &shop_runtime::webhook_secret::WebhookSecret| {
        let signature = by.signer().sign(id, timestamp, body).expect("sign");
        http::Request::post(format!("http://{}{PATH}", gateway.addr))
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("content-type", "application/json")
            .body(full(body))
            .expect("request")
    };
    // About no charge svc-payment keeps: stored and answered, nothing more.
    let event: &[u8] = br#"{"id": "evt_gateway_1", "type": "ping.sent",
 "data": {"object": {"object": "ping", "id": "ping_\u00e9"}}}"#;
    within("webhooks to svc-payment", 60, async {
        let (status, _, body) = send(&client, signed("evt_gateway_1", now(), event, secret)).await;
        assert_eq!((status, &body[..]), (http::StatusCode::OK, &b"{}"[..]));
        // A repeat is taken again and changes nothing.
        let (status, _, _) = send(&client, signed("evt_gateway_1", now(), event, secret)).await;
        assert_eq!(status, http::StatusCode::OK);

        let forger = shop_runtime::webhook_secret::WebhookSecret::generate();
        let (status, _, body) = send(&client, signed("evt_gateway_2", now(), event, &forger)).await;
        assert_eq!(status, http::StatusCode::UNAUTHORIZED, "signed with another secret");
        assert!(body.is_empty());
        let (status, _, _) = send(&client, signed("evt_gateway_3", now() - 3600, event, secret)).await;
        assert_eq!(status, http::StatusCode::UNAUTHORIZED, "an hour old");
        let (status, _, _) = send(&client, signed("evt_gateway_4", now(), b"not an event", secret)).await;
        assert_eq!(status, http::StatusCode::BAD_REQUEST, "signed, but not an event");
    })
    .await;
}
