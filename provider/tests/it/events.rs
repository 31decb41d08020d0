//! `GET /v1/events`: every change, in order, with the object as it was.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Provider, config, data_dir, error, eventually};

/// Every event, page by page.
pub(crate) async fn all_events(provider: &Provider) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = provider.get(&format!("/v1/events?after={after}&limit=2")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let data = page["data"].as_array().expect("a list");
        assert!(data.len() <= 2);
        events.extend(data.iter().cloned());
        if page["has_more"] != true {
            return events;
        }
        after = data.last().and_then(|e| e["id"].as_str()).expect("an event").to_owned();
    }
}

fn of<'a>(events: &'a [Value], object: &Value) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["data"]["object"]["id"] == object["id"])
        .map(|e| e["type"].as_str().expect("a type"))
        .collect()
}

#[tokio::test]
async fn every_change_is_an_event_in_the_order_it_happened() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let (_, ok) = provider.pay("k-ok", "pm_card_ok").await;
    let (_, declined) = provider.pay("k-declined", "pm_card_declined").await;
    let (_, paid_later) = provider.pay("k-async", "pm_card_async").await;
    let (_, declined_later) = provider.pay("k-async-declined", "pm_card_async_declined").await;
    let (_, canceled) = provider.pay("k-canceled", "pm_card_async").await;
    provider.cancel(canceled["id"].as_str().expect("an id")).await;
    let (_, refund) = crate::support::answer(
        provider
            .post(
                "/v1/refunds",
                Some("r"),
                &json!({"payment_intent": ok["id"], "amount": 99}),
            )
            .await,
    )
    .await;

    let events = eventually("every intent and refund to settle", || async {
        let events = all_events(&provider).await;
        (events.len() == 10).then_some(events)
    })
    .await;
    assert_eq!(of(&events, &ok), ["payment_intent.succeeded"]);
    assert_eq!(of(&events, &declined), ["payment_intent.payment_failed"]);
    assert_eq!(
        of(&events, &paid_later),
        ["payment_intent.processing", "payment_intent.succeeded"]
    );
    assert_eq!(
        of(&events, &declined_later),
        ["payment_intent.processing", "payment_intent.payment_failed"]
    );
    assert_eq!(
        of(&events, &canceled),
        ["payment_intent.processing", "payment_intent.canceled"]
    );
    assert_eq!(of(&events, &refund), ["refund.created", "refund.updated"]);

    // Each carries its object as it was then.
    let processing = events
        .iter()
        .find(|e| e["type"] == "payment_intent.processing" && e["data"]["object"]["id"] == paid_later["id"])
        .expect("the processing event");
    assert_eq!(processing["data"]["object"]["status"], "processing");
    assert_eq!(processing["data"]["object"]["object"], "payment_intent");
    let created = events
        .iter()
        .find(|e| e["type"] == "refund.created")
        .expect("refund.created");
    assert_eq!(created["data"]["object"]["status"], "pending");
    assert_eq!(created["data"]["object"]["object"], "refund");
    for event in &events {
        assert!(event["id"].as_str().is_some_and(|id| id.starts_with("evt_")), "{event}");
        assert!(event["created"].is_i64(), "{event}");
    }
    // The first five happened in the order they were asked for.
    let first: Vec<&Value> = events.iter().take(4).map(|e| &e["data"]["object"]["id"]).collect();
    assert_eq!(
        first,
        [&ok["id"], &declined["id"], &paid_later["id"], &declined_later["id"]]
    );

    let (status, whole) = provider.get("/v1/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whole["data"].as_array().map(Vec::len), Some(10));
    assert_eq!(whole["has_more"], false);
    let (status, bad) = provider.get("/v1/events?after=evt_nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&bad)["param"], "after");
    let (status, bad) = provider.get("/v1/events?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&bad)["param"], "limit");
    provider.stop().await;
}
