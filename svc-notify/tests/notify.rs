//! svc-notify end to end, against a real nats-server and PostgreSQL: one
//! email per order event and per refund however often the event arrives,
//! undecodable events parked on the DLQ, and emails that could not be sent
//! delivered later by the resend loop.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::{
    HeaderMap,
    jetstream::{self, consumer::pull},
};
use shop_infra::{NatsServer, free_port, fresh_database};
use shop_proto::{
    common::v1::Money,
    events::v1 as ev,
    notify::v1::{ListNotificationsRequest, Notification, notification_service_client::NotificationServiceClient},
};
use shop_runtime::{
    CancellationToken, Listeners,
    config::EnvReader,
    consumer::HEADER_DLQ_CONSUMER,
    event::{self, Event},
    topology,
};
use svc_notify::Config;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
    time::Instant,
};
use tonic::{Request, Status, transport::Channel};
use uuid::Uuid;

/// Upper bound of every wait: generous for a loaded CI machine, short
/// enough that a hang fails the test rather than the job.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running svc-notify with its own database and nats-server.
struct Service {
    client: NotificationServiceClient<Channel>,
    js: jetstream::Context,
    database_url: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), shop_runtime::host::HostError>>,
    // Dropped last: stops the server.
    _nats: NatsServer,
}

impl Service {
    async fn start(data_dir: &Path, extra: &[(&str, String)]) -> Self {
        let database_url = fresh_database().await.expect("a test database");
        let nats = NatsServer::start().await.expect("a test nats-server");
        let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect to nats"));
        topology::ensure_streams(&js, 1).await.expect("streams created");

        let mut env = vec![
            ("NATS_URL", nats.url()),
            ("DATABASE_URL", database_url.clone()),
            ("NOTIFY_DATA_DIR", data_dir.display().to_string()),
            ("NOTIFY_RESEND_INTERVAL", "200ms".to_owned()),
            (
                shop_runtime::identity::VERIFYING_KEY_FILE,
                shop_harness::identity_keys().verifying.display().to_string(),
            ),
        ];
        env.extend(extra.iter().cloned());
        let config = Config::read(EnvReader::from_map(env)).expect("valid configuration");
        let listeners = Listeners::ephemeral().await.expect("free ports");
        let addr = listeners.grpc.local_addr().expect("bound");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(svc_notify::run(config, listeners, shutdown.clone()));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("valid endpoint")
            .connect_lazy();
        Self {
            client: NotificationServiceClient::new(channel),
            js,
            database_url,
            shutdown,
            task,
            _nats: nats,
        }
    }

    /// ListNotifications as `user` (with `roles`, comma-separated, if any).
    async fn list(&self, user: &str, roles: &str, order_id: &str) -> Result<Vec<Notification>, Status> {
        let mut request = Request::new(ListNotificationsRequest {
            order_id: order_id.to_owned(),
        });
        let token =
            shop_harness::AsUser::new(user, roles).token("/shop.notify.v1.NotificationService/ListNotifications");
        request.metadata_mut().insert(
            shop_runtime::identity::IDENTITY_HEADER,
            token.parse().expect("a token is ascii"),
        );
        let mut client = self.client.clone();
        client
            .list_notifications(request)
            .await
            .map(|r| r.into_inner().notifications)
    }

    /// Publishes and waits for the stream's ack; returns the stream sequence.
    async fn publish(&self, subject: String, headers: HeaderMap, payload: Vec<u8>) -> u64 {
        self.js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .expect("publish sent")
            .await
            .expect("publish acknowledged")
            .sequence
    }

    /// Waits until `notify-orders` has acknowledged (or parked) everything
    /// up to stream sequence `sequence`.
    async fn wait_processed(&self, sequence: u64) {
        self.wait_consumer("notify-orders", "ORDERS", sequence).await;
    }

    /// Waits until `consumer` of `stream` has acknowledged (or parked)
    /// everything up to stream sequence `sequence`.
    async fn wait_consumer(&self, consumer: &str, stream: &str, sequence: u64) {
        eventually(
            &format!("{consumer} to settle {stream} sequence {sequence}"),
            async || {
                let Ok(mut consumer) = self
                    .js
                    .get_consumer_from_stream::<pull::Config, _, _>(consumer, stream)
                    .await
                else {
                    return false;
                };
                consumer
                    .info()
                    .await
                    .is_ok_and(|info| info.ack_floor.stream_sequence >= sequence)
            },
        )
        .await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("svc-notify stops promptly");
        result
            .expect("svc-notify did not panic")
            .expect("svc-notify ended cleanly");
    }
}

fn headers_for<E: Event>(event: &E, event_id: Uuid) -> HeaderMap {
    event::headers(
        event_id,
        E::TYPE,
        "svc-order",
        event.key(),
        chrono::Utc::now(),
        &Default::default(),
    )
}

fn eur(minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor: minor,
    })
}

fn confirmed(order_id: Uuid, user_id: &str, minor: i64) -> ev::OrderConfirmed {
    ev::OrderConfirmed {
        order_id: order_id.to_string(),
        user_id: user_id.into(),
        total: eur(minor),
        confirmed_at: None,
    }
}

fn json<E: Event>(event: &E) -> Vec<u8> {
    serde_json::to_vec(event).expect("event encodes")
}

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|ext| ext == "eml"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_email_per_order_event_and_undecodable_events_go_to_the_dlq() {
    let data = tempfile::tempdir().expect("temporary directory");
    let mail_dir = data.path().join("outbox-mail");
    let service = Service::start(data.path(), &[]).await;

    // An order is confirmed: one notification, one file.
    let order_id = Uuid::now_v7();
    let event = confirmed(order_id, "alice", 2598);
    let event_id = Uuid::now_v7();
    service
        .publish(event.subject(), headers_for(&event, event_id), json(&event))
        .await;
    eventually("alice's confirmation to be listed as sent and written", async || {
        let listed = service.list("alice", "", "").await.unwrap_or_default();
        listed.len() == 1 && listed[0].sent_at.is_some() && eml_files(&mail_dir).len() == 1
    })
    .await;
    let listed = service.list("alice", "", "").await.expect("alice lists");
    let notification = &listed[0];
    assert_eq!(notification.order_id, order_id.to_string());
    assert_eq!(notification.user_id, "alice");
    assert_eq!(notification.recipient, "alice@customers.shop.test");
    assert!(notification.subject.contains("confirmed"), "{}", notification.subject);
    assert!(notification.body.contains("EUR 25.98"), "{}", notification.body);
    let file = mail_dir.join(format!("{}.eml", notification.notification_id));
    let eml = std::fs::read_to_string(&file).expect("the .eml file is named after the notification");
    for expected in [
        format!("Message-ID: <{}@shop>\r\n", notification.notification_id),
        "From: orders@shop.test\r\n".to_owned(),
        "To: alice@customers.shop.test\r\n".to_owned(),
        format!("Subject: {}\r\n", notification.subject),
        "Total: EUR 25.98\r\n".to_owned(),
    ] {
        assert!(eml.contains(&expected), "{expected:?} missing from\n{eml}");
    }

    // Replays: the same event id under a new Nats-Msg-Id (past JetStream's
    // dedupe), and the same order event under a new event id.
    let mut same_id = headers_for(&event, event_id);
    same_id.insert(async_nats::header::NATS_MESSAGE_ID, Uuid::now_v7().to_string().as_str());
    service.publish(event.subject(), same_id, json(&event)).await;
    let last = service
        .publish(event.subject(), headers_for(&event, Uuid::now_v7()), json(&event))
        .await;
    service.wait_processed(last).await;
    let listed = service.list("alice", "", "").await.expect("alice lists");
    assert_eq!(listed.len(), 1, "replays must not add notifications: {listed:?}");
    assert_eq!(listed[0].notification_id, notification.notification_id);
    assert_eq!(eml_files(&mail_dir), [file], "replays must not add files");

    // Visibility: only the owner and admins see it; the filter is validated.
    assert!(service.list("bob", "", "").await.expect("bob lists").is_empty());
    assert!(
        service
            .list("bob", "", &order_id.to_string())
            .await
            .expect("bob filters")
            .is_empty()
    );
    let admin = service
        .list("root", "admin", &order_id.to_string())
        .await
        .expect("admin lists");
    assert_eq!(admin.len(), 1);
    let bad = service
        .list("alice", "", "order-1")
        .await
        .expect_err("order_id must be a UUID");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("order_id"), "{}", bad.message());

    // An undecodable OrderConfirmed is parked; the next event still flows.
    let broken_order = Uuid::now_v7();
    let broken_headers = event::headers(
        Uuid::now_v7(),
        <ev::OrderConfirmed as Event>::TYPE,
        "svc-order",
        &broken_order.to_string(),
        chrono::Utc::now(),
        &Default::default(),
    );
    service
        .publish(
            format!("orders.confirmed.{broken_order}"),
            broken_headers,
            b"{not json".to_vec(),
        )
        .await;
    let cancelled = ev::OrderCancelled {
        order_id: Uuid::now_v7().to_string(),
        user_id: "carol".into(),
        reason: ev::OrderCancelReason::PaymentDeclined as i32,
        total: eur(1299),
        cancelled_at: None,
    };
    service
        .publish(
            cancelled.subject(),
            headers_for(&cancelled, Uuid::now_v7()),
            json(&cancelled),
        )
        .await;
    eventually("carol's cancellation to be sent", async || {
        let listed = service.list("carol", "", "").await.unwrap_or_default();
        listed.len() == 1 && listed[0].sent_at.is_some()
    })
    .await;
    let carol = service.list("carol", "", "").await.expect("carol lists");
    assert!(carol[0].subject.contains("cancelled"), "{}", carol[0].subject);
    assert!(carol[0].body.contains("payment was declined"), "{}", carol[0].body);
    assert_eq!(eml_files(&mail_dir).len(), 2);

    let dlq_subject = format!("dlq.notify-orders.orders.confirmed.{broken_order}");
    let dlq = service.js.get_stream("DLQ").await.expect("DLQ stream");
    let mut parked = None;
    eventually("the undecodable event on the DLQ", async || {
        parked = dlq.get_last_raw_message_by_subject(&dlq_subject).await.ok();
        parked.is_some()
    })
    .await;
    let parked = parked.expect("parked message");
    assert_eq!(parked.payload.as_ref(), b"{not json");
    assert_eq!(
        parked.headers.get(HEADER_DLQ_CONSUMER).map(|v| v.as_str()),
        Some("notify-orders")
    );
    assert!(
        service
            .list("root", "admin", &broken_order.to_string())
            .await
            .expect("admin lists")
            .is_empty()
    );

    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refund_gets_one_email_and_a_cancellations_refund_none() {
    let data = tempfile::tempdir().expect("temporary directory");
    let mail_dir = data.path().join("outbox-mail");
    let service = Service::start(data.path(), &[]).await;
    let order_id = Uuid::now_v7();
    let refunded = |refund_id: &str, minor| ev::PaymentRefunded {
        order_id: order_id.to_string(),
        user_id: "erin".into(),
        payment_id: "p-1".into(),
        amount: eur(minor),
        refund_id: refund_id.into(),
    };

    // A cancelled order's charge given back (no refund id): no email, the
    // cancellation's told of it.
    let sequence = service
        .publish(
            refunded("", 2598).subject(),
            headers_for(&refunded("", 2598), Uuid::now_v7()),
            json(&refunded("", 2598)),
        )
        .await;
    service.wait_consumer("notify-payments", "PAYMENTS", sequence).await;
    assert!(service.list("erin", "", "").await.expect("erin lists").is_empty());

    // A refund of the confirmed order: one email naming what came back.
    let first = refunded("r-1", 1299);
    let event_id = Uuid::now_v7();
    service
        .publish(first.subject(), headers_for(&first, event_id), json(&first))
        .await;
    eventually("erin's refund email to be sent", async || {
        let listed = service.list("erin", "", "").await.unwrap_or_default();
        listed.len() == 1 && listed[0].sent_at.is_some() && eml_files(&mail_dir).len() == 1
    })
    .await;
    let listed = service.list("erin", "", "").await.expect("erin lists");
    let email = &listed[0];
    assert_eq!(email.order_id, order_id.to_string());
    assert_eq!(email.subject, format!("Your refund for order {order_id}"));
    assert!(email.body.contains("we have refunded EUR 12.99"), "{}", email.body);
    let eml = std::fs::read_to_string(mail_dir.join(format!("{}.eml", email.notification_id))).expect("written");
    assert!(eml.contains("Refund: EUR 12.99\r\n"), "{eml}");

    // Heard again (redelivered under the same event id, replayed under a
    // new one): still one email. Another refund of the order: its own.
    let mut same_id = headers_for(&first, event_id);
    same_id.insert(async_nats::header::NATS_MESSAGE_ID, Uuid::now_v7().to_string().as_str());
    service.publish(first.subject(), same_id, json(&first)).await;
    service
        .publish(first.subject(), headers_for(&first, Uuid::now_v7()), json(&first))
        .await;
    let second = refunded("r-2", 500);
    let sequence = service
        .publish(second.subject(), headers_for(&second, Uuid::now_v7()), json(&second))
        .await;
    service.wait_consumer("notify-payments", "PAYMENTS", sequence).await;
    let listed = service.list("erin", "", "").await.expect("erin lists");
    assert_eq!(listed.len(), 2, "one email per refund: {listed:?}");
    assert!(listed[0].body.contains("EUR 5.00"), "newest first: {}", listed[0].body);

    // A refund that could not be made: the customer hears the shop will be
    // in touch, never the provider's reason.
    let failed = ev::PaymentRefundFailed {
        order_id: order_id.to_string(),
        user_id: "erin".into(),
        payment_id: "p-1".into(),
        refund_id: "r-3".into(),
        amount: eur(700),
        reason: "card_expired at provider (acct_4242)".into(),
    };
    service
        .publish(failed.subject(), headers_for(&failed, Uuid::now_v7()), json(&failed))
        .await;
    eventually("erin's failed refund email to be sent", async || {
        let listed = service.list("erin", "", "").await.unwrap_or_default();
        listed.len() == 3 && listed.iter().all(|n| n.sent_at.is_some()) && eml_files(&mail_dir).len() == 3
    })
    .await;
    let listed = service.list("erin", "", "").await.expect("erin lists");
    let failed_email = &listed[0];
    assert_eq!(
        failed_email.subject,
        format!("Your refund for order {order_id} could not be completed")
    );
    assert!(
        failed_email.body.contains("we will be in touch"),
        "{}",
        failed_email.body
    );
    assert!(failed_email.body.contains("Refund: EUR 7.00"), "{}", failed_email.body);
    for internal in ["card_expired", "provider", "acct_4242"] {
        assert!(!failed_email.body.contains(internal), "{}", failed_email.body);
    }

    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_the_relay_refused_are_resent_once_it_is_back() {
    let data = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let service = Service::start(data.path(), &[("NOTIFY_SMTP_URL", format!("smtp://127.0.0.1:{port}"))]).await;

    let event = confirmed(Uuid::now_v7(), "dave", 899);
    service
        .publish(event.subject(), headers_for(&event, Uuid::now_v7()), json(&event))
        .await;

    // Nothing listens on the relay port yet: stored, unsent, failure recorded.
    let pool = sqlx::PgPool::connect(&service.database_url)
        .await
        .expect("test database");
    eventually("a failed attempt to be recorded", async || {
        // Fails until the service has migrated; that is "not yet".
        let row: Result<Option<(i32, Option<String>)>, _> =
            sqlx::query_as("SELECT attempts, last_error FROM notifications WHERE sent_at IS NULL")
                .fetch_optional(&pool)
                .await;
        row.ok()
            .flatten()
            .is_some_and(|(attempts, error)| attempts >= 1 && error.is_some())
    })
    .await;
    let listed = service.list("dave", "", "").await.expect("dave lists");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sent_at, None, "not sent while the relay is down");

    // The relay comes up: the resend loop delivers, exactly once.
    let received = Arc::new(Mutex::new(Vec::new()));
    let relay = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("relay port still free");
    tokio::spawn(fake_smtp_relay(relay, received.clone()));
    eventually("dave's confirmation to be sent", async || {
        service
            .list("dave", "", "")
            .await
            .unwrap_or_default()
            .first()
            .is_some_and(|n| n.sent_at.is_some())
    })
    .await;
    // A few more resend passes must not send it again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let messages = received.lock().expect("not poisoned").clone();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert!(
        message.contains(&format!("Message-ID: <{}@shop>", listed[0].notification_id)),
        "{message}"
    );
    assert!(message.contains("To: dave@customers.shop.test"), "{message}");
    assert!(message.contains("Total: EUR 8.99"), "{message}");

    service.stop().await;
}

/// Accepts every message and records its DATA (headers and body).
async fn fake_smtp_relay(listener: TcpListener, received: Arc<Mutex<Vec<String>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        let received = received.clone();
        tokio::spawn(async move {
            let _ = smtp_session(stream, received).await;
        });
    }
}

async fn smtp_session(stream: TcpStream, received: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 relay.test ESMTP\r\n").await?;
    while let Some(line) = lines.next_line().await? {
        let verb = line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
        match verb.as_str() {
            "DATA" => {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut data = Vec::new();
                while let Some(line) = lines.next_line().await? {
                    if line == "." {
                        break;
                    }
                    // Undo the sender's dot-stuffing.
                    data.push(line.strip_prefix('.').map(str::to_owned).unwrap_or(line));
                }
                received.lock().expect("not poisoned").push(data.join("\r\n"));
                write.write_all(b"250 queued\r\n").await?;
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"250 ok\r\n").await?,
        }
    }
    Ok(())
}
