//! The fault knobs of `/admin/faults`, each doing what it says.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Provider, Receiver, answer, client, config, data_dir, error, eventually, with_webhooks};

async fn set_faults(provider: &Provider, faults: Value) -> (StatusCode, Value) {
    answer(client().put(provider.at("/admin/faults")).json(&faults).send().await).await
}

#[tokio::test]
async fn an_outage_refuses_every_call_and_does_nothing() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let (_, before) = provider.pay("k-before", "pm_card_ok").await;
    let (status, set) = set_faults(&provider, json!({"outage": true})).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["outage"], true);
    assert_eq!(provider.get("/admin/faults").await.1, set);

    let (status, refused) = provider.pay("k-during", "pm_card_ok").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error(&refused)["type"], "api_error");
    let (status, _) = provider
        .get(&format!(
            "/v1/payment_intents/{}",
            before["id"].as_str().expect("an id")
        ))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        provider.ledger().await.len(),
        1,
        "admin still answers; nothing was charged"
    );

    set_faults(&provider, json!({})).await;
    let (status, after) = provider.pay("k-during", "pm_card_ok").await;
    assert_eq!((status, &after["status"]), (StatusCode::OK, &json!("succeeded")));
    provider.stop().await;
}

#[tokio::test]
async fn slow_answers_come_late_but_the_call_acted() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    set_faults(&provider, json!({"slow_ms": 1500})).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("a client");
    let late = impatient
        .post(provider.at("/v1/payment_intents"))
        .header("Idempotency-Key", "k-slow")
        .json(&crate::support::intent_body("pm_card_ok"))
        .send()
        .await
        .expect_err("too slow for this client");
    assert!(late.is_timeout(), "{late:?}");
    assert_eq!(provider.ledger().await.len(), 1, "the call acted");
    let (status, intent) = provider.pay("k-slow", "pm_card_ok").await;
    assert_eq!((status, &intent["status"]), (StatusCode::OK, &json!("succeeded")));
    provider.stop().await;
}

#[tokio::test]
async fn a_lost_answer_acted_and_a_retry_with_its_key_sees_it() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    set_faults(&provider, json!({"lose_answers": 1.0})).await;
    let lost = provider
        .post(
            "/v1/payment_intents",
            Some("k-lost"),
            &crate::support::intent_body("pm_card_ok"),
        )
        .await;
    assert!(lost.is_err(), "the answer is lost: {lost:?}");
    let ledger = provider.ledger().await;
    assert_eq!(ledger.len(), 1, "yet the call acted");
    // Reads are not lost.
    let (status, _) = provider.get("/v1/events").await;
    assert_eq!(status, StatusCode::OK);

    set_faults(&provider, json!({"lose_answers": 0})).await;
    let (status, intent) = provider.pay("k-lost", "pm_card_ok").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(intent["id"], ledger[0]["intent"]);
    assert_eq!(provider.ledger().await.len(), 1, "no second charge");
    provider.stop().await;
}

#[tokio::test]
async fn knobs_out_of_range_are_refused() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let (status, body) = set_faults(&provider, json!({"lose_answers": 2})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&body)["param"], "lose_answers");
    let (status, _) = set_faults(&provider, json!({"webhooks": {"drop": -0.1}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = set_faults(&provider, json!({"outgae": true})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, faults) = provider.get("/admin/faults").await;
    assert_eq!(faults["outage"], false, "nothing was set: {faults}");
    provider.stop().await;
}

#[tokio::test]
async fn dropped_webhooks_are_delivered_by_a_later_retry() {
    let receiver = Receiver::start(0).await;
    let dir = data_dir();
    let provider = Provider::start(with_webhooks(config(&dir), &receiver)).await;
    set_faults(&provider, json!({"webhooks": {"drop": 1.0}})).await;
    let (_, intent) = provider.pay("k-ok", "pm_card_ok").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.delivered().is_empty(), "every attempt so far was dropped");

    set_faults(&provider, json!({})).await;
    let event = eventually("the event to get through", || async { receiver.delivered().pop() }).await;
    assert_eq!(event["data"]["object"]["id"], intent["id"]);
    provider.stop().await;
}

#[tokio::test]
async fn duplicated_webhooks_arrive_twice() {
    let receiver = Receiver::start(0).await;
    let dir = data_dir();
    let provider = Provider::start(with_webhooks(config(&dir), &receiver)).await;
    set_faults(&provider, json!({"webhooks": {"duplicate": 1.0}})).await;
    provider.pay("k-ok", "pm_card_ok").await;
    let delivered = eventually("the event twice", || async {
        let delivered = receiver.delivered();
        (delivered.len() == 2).then_some(delivered)
    })
    .await;
    assert_eq!(delivered[0], delivered[1], "the same event, twice");
    assert_eq!(receiver.forged(), 0);
    provider.stop().await;
}

#[tokio::test]
async fn delayed_and_reordered_webhooks_are_held_back_yet_all_arrive() {
    let receiver = Receiver::start(0).await;
    let dir = data_dir();
    let provider = Provider::start(with_webhooks(config(&dir), &receiver)).await;
    set_faults(&provider, json!({"webhooks": {"delay_ms": 1000, "reorder": true}})).await;
    let mut paid = Vec::new();
    for n in 0..5 {
        let asked = tokio::time::Instant::now();
        let (_, intent) = provider.pay(&format!("k-{n}"), "pm_card_ok").await;
        paid.push((asked, intent));
    }
    let arrivals = eventually("all five events", || async {
        let arrivals = receiver.arrivals();
        (arrivals.len() == 5).then_some(arrivals)
    })
    .await;
    for (asked, intent) in paid {
        let (arrived, _) = arrivals
            .iter()
            .find(|(_, event)| event["data"]["object"]["id"] == intent["id"])
            .expect("delivered");
        assert!(
            arrived.duration_since(asked) >= Duration::from_millis(1000),
            "held back at least delay_ms"
        );
    }
    provider.stop().await;
}

/// The admin client (what the stacks, fault runs and `cargo xtask verify`
/// use) sets and reads the knobs and reads the ledger as the API has them.
#[tokio::test]
async fn the_admin_client_sets_knobs_and_reads_the_ledger() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let admin = shop_provider::admin_client::AdminClient::new(format!("{}/", provider.url));
    admin.wait_live(Duration::from_secs(10)).await.expect("live");
    assert_eq!(admin.url(), provider.url);

    let set = admin.set_faults(&shop_provider::Faults::outage()).await.expect("set");
    assert!(set.outage);
    assert_eq!(admin.faults().await.expect("read"), set);
    let (status, _) = provider.pay("k-down", "pm_card_ok").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    admin
        .set_faults(&shop_provider::Faults::default())
        .await
        .expect("all off");

    let (_, paid) = provider.pay("k-up", "pm_card_ok").await;
    let ledger = admin.ledger().await.expect("the ledger");
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(Some(ledger[0].intent.as_str()), paid["id"].as_str());
    assert_eq!(ledger[0].order_id.as_deref(), Some("order-1"));
    assert_eq!((ledger[0].captured, ledger[0].refunded), (1299, 0));

    let gone = shop_provider::admin_client::AdminClient::new(dead_url());
    assert!(gone.wait_live(Duration::from_millis(200)).await.is_err());
}

/// A URL where nothing listens: a port just given back.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    format!("http://{}", listener.local_addr().expect("bound"))
}
