//! Starting and stopping a provider on a free port, and the calls the tests
//! make to it.

use std::{future::Future, time::Duration};

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
pub(crate) use shop_provider::Config;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The longest any test waits for something to happen.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// A provider serving on a free loopback port.
pub(crate) struct Provider {
    pub(crate) url: String,
    shutdown: CancellationToken,
    running: JoinHandle<Result<(), shop_provider::Error>>,
}

/// A data directory that lives as long as the test.
pub(crate) fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// The test settings: a short async delay and quick webhook retries.
pub(crate) fn config(dir: &tempfile::TempDir) -> Config {
    Config {
        // Long enough that a test acts on a processing intent before it
        // settles, even on a busy machine.
        async_delay: Duration::from_secs(1),
        webhook_first_retry: Duration::from_millis(100),
        ..Config::local(dir.path())
    }
}

impl Provider {
    pub(crate) async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(shop_provider::run(config, listener, shutdown.clone()));
        Self { url, shutdown, running }
    }

    /// Stops it and waits until it no longer writes.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.running)
            .await
            .expect("stops in time")
            .expect("did not panic")
            .expect("ran without error");
    }

    pub(crate) fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub(crate) async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> reqwest::Result<Response> {
        let mut request = client().post(self.at(path)).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await
    }

    /// Creates an intent; the answer must arrive.
    pub(crate) async fn pay(&self, key: &str, card: &str) -> (StatusCode, Value) {
        answer(self.post("/v1/payment_intents", Some(key), &intent_body(card)).await).await
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        answer(client().get(self.at(path)).send().await).await
    }

    pub(crate) async fn intent(&self, id: &str) -> Value {
        let (status, intent) = self.get(&format!("/v1/payment_intents/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{intent}");
        intent
    }

    pub(crate) async fn cancel(&self, id: &str) -> (StatusCode, Value) {
        answer(
            self.post(&format!("/v1/payment_intents/{id}/cancel"), None, &json!({}))
                .await,
        )
        .await
    }

    /// Waits until intent `id` has `status`.
    pub(crate) async fn intent_reaches(&self, id: &str, status: &str) -> Value {
        eventually(&format!("{id} to be {status}"), || async {
            let intent = self.intent(id).await;
            (intent["status"] == status).then_some(intent)
        })
        .await
    }

    pub(crate) async fn ledger(&self) -> Vec<Value> {
        let (status, ledger) = self.get("/admin/ledger").await;
        assert_eq!(status, StatusCode::OK, "{ledger}");
        ledger["data"].as_array().expect("a list").clone()
    }
}

pub(crate) fn intent_body(card: &str) -> Value {
    json!({
        "amount": 1299,
        "currency": "eur",
        "payment_method": card,
        "metadata": {"order_id": "order-1"},
    })
}

/// A client that does not follow redirects, with a timeout well above
/// anything the provider should take.
pub(crate) fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client")
}

/// Status and JSON body of an answer that must have arrived.
pub(crate) async fn answer(response: reqwest::Result<Response>) -> (StatusCode, Value) {
    let response = response.expect("an answer");
    let status = response.status();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// Polls `probe` until it gives something, for at most [`PATIENCE`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `"error"` of an error body.
pub(crate) fn error(body: &Value) -> &Value {
    &body["error"]
}

/// The signing secret the tests configure.
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Settings that send webhooks to `receiver`.
pub(crate) fn with_webhooks(config: Config, receiver: &Receiver) -> Config {
    Config {
        webhook: Some(shop_provider::config::WebhookSettings {
            url: receiver.url.parse().expect("a URL"),
            secret: SECRET.parse().expect("a secret"),
        }),
        ..config
    }
}

/// A shop's webhook endpoint: verifies every delivery's signature, and
/// answers 500 to the first `fail_first` attempts of each event (or to
/// every one while `down`).
pub(crate) struct Receiver {
    pub(crate) url: String,
    state: std::sync::Arc<ReceiverState>,
}

struct ReceiverState {
    verifier: standardwebhooks::Webhook,
    fail_first: usize,
    down: std::sync::atomic::AtomicBool,
    /// Attempts per event id, failed ones included.
    attempts: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Deliveries answered 200, verified, in the order they came, with
    /// when they came.
    delivered: std::sync::Mutex<Vec<(tokio::time::Instant, Value)>>,
    forged: std::sync::atomic::AtomicUsize,
}

impl Receiver {
    pub(crate) async fn start(fail_first: usize) -> Self {
        use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post};
        let state = std::sync::Arc::new(ReceiverState {
            verifier: standardwebhooks::Webhook::new(SECRET).expect("a secret"),
            fail_first,
            down: false.into(),
            attempts: Default::default(),
            delivered: Default::default(),
            forged: 0.into(),
        });
        async fn hook(
            State(state): State<std::sync::Arc<ReceiverState>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            use std::sync::atomic::Ordering;
            let id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let attempt = {
                let mut attempts = state.attempts.lock().expect("not poisoned");
                let n = attempts.entry(id).or_default();
                *n += 1;
                *n
            };
            if state.down.load(Ordering::SeqCst) || attempt <= state.fail_first {
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
            if state.verifier.verify(&body, &headers).is_err() {
                state.forged.fetch_add(1, Ordering::SeqCst);
                return StatusCode::BAD_REQUEST;
            }
            let event: Value = serde_json::from_slice(&body).expect("a JSON event");
            state
                .delivered
                .lock()
                .expect("not poisoned")
                .push((tokio::time::Instant::now(), event));
            StatusCode::OK
        }
        let app = axum::Router::new()
            .route("/hooks", post(hook))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let url = format!("http://{}/hooks", listener.local_addr().expect("bound"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    /// Answer 500 to everything (`true`) or as configured.
    pub(crate) fn set_down(&self, down: bool) {
        self.state.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// The events delivered and verified, in arrival order.
    pub(crate) fn delivered(&self) -> Vec<Value> {
        self.arrivals().into_iter().map(|(_, event)| event).collect()
    }

    /// The events delivered and verified, with when each arrived.
    pub(crate) fn arrivals(&self) -> Vec<(tokio::time::Instant, Value)> {
        self.state.delivered.lock().expect("not poisoned").clone()
    }

    /// How many times event `id` was delivered (verified, answered 200).
    pub(crate) fn times(&self, id: &Value) -> usize {
        self.delivered().iter().filter(|e| &e["id"] == id).count()
    }

    pub(crate) fn attempts(&self, id: &str) -> usize {
        self.state
            .attempts
            .lock()
            .expect("not poisoned")
            .get(id)
            .copied()
            .unwrap_or_default()
    }

    /// Deliveries whose signature did not verify.
    pub(crate) fn forged(&self) -> usize {
        self.state.forged.load(std::sync::atomic::Ordering::SeqCst)
    }
}
