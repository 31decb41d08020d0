//! Webhooks: every event reaches the shop's endpoint, signed, at least
//! once, through failures and restarts.

use serde_json::{Value, json};

use crate::{
    events::all_events,
    support::{Provider, Receiver, answer, config, data_dir, eventually, with_webhooks},
};

/// Makes one of each kind of event: 9 in all once everything settled.
async fn a_bit_of_everything(provider: &Provider) {
    let (_, ok) = provider.pay("k-ok", "pm_card_ok").await;
    provider.pay("k-declined", "pm_card_declined").await;
    provider.pay("k-3ds", "pm_card_3ds").await;
    provider.pay("k-async", "pm_card_async").await;
    let (_, canceled) = provider.pay("k-cancel", "pm_card_async_declined").await;
    provider.cancel(canceled["id"].as_str().expect("an id")).await;
    answer(
        provider
            .post("/v1/refunds", Some("r"), &json!({"payment_intent": ok["id"]}))
            .await,
    )
    .await;
}

/// Waits until every event of `provider` was delivered to `receiver`.
async fn all_delivered(provider: &Provider, receiver: &Receiver, count: usize) -> Vec<Value> {
    eventually("every event to be delivered", || async {
        let events = all_events(provider).await;
        let done = events.len() == count && events.iter().all(|e| receiver.times(&e["id"]) >= 1);
        done.then_some(events)
    })
    .await
}

#[tokio::test]
async fn every_event_is_delivered_signed_even_after_the_endpoint_failed_a_few_times() {
    let receiver = Receiver::start(3).await;
    let dir = data_dir();
    let provider = Provider::start(with_webhooks(config(&dir), &receiver)).await;
    a_bit_of_everything(&provider).await;

    let events = all_delivered(&provider, &receiver, 9).await;
    let kinds: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "payment_intent.canceled",
            "payment_intent.payment_failed",
            "payment_intent.processing",
            "payment_intent.requires_action",
            "payment_intent.succeeded",
            "refund.created",
            "refund.updated",
        ]
    );
    for event in &events {
        let id = event["id"].as_str().expect("an id");
        assert!(receiver.attempts(id) >= 4, "{id} was retried after three 500s");
        let delivered = receiver.delivered();
        let body = delivered.iter().find(|d| d["id"] == id).expect("delivered");
        assert_eq!(body, event, "the webhook's body is the event");
    }
    assert_eq!(receiver.forged(), 0, "every signature verified");
    provider.stop().await;
}

#[tokio::test]
async fn webhooks_still_owed_are_sent_after_a_restart() {
    let receiver = Receiver::start(0).await;
    receiver.set_down(true);
    let dir = data_dir();
    let provider = Provider::start(with_webhooks(config(&dir), &receiver)).await;
    let (_, ok) = provider.pay("k-ok", "pm_card_ok").await;
    let (_, declined) = provider.pay("k-declined", "pm_card_declined").await;
    eventually("a few failed attempts", || async {
        (receiver.attempts(&first_event_id(&provider).await) >= 2).then_some(())
    })
    .await;
    provider.stop().await;
    assert!(receiver.delivered().is_empty());

    receiver.set_down(false);
    let provider = Provider::start(with_webhooks(config(&dir), &receiver)).await;
    let events = all_delivered(&provider, &receiver, 2).await;
    let objects: Vec<&Value> = events.iter().map(|e| &e["data"]["object"]["id"]).collect();
    assert_eq!(objects, [&ok["id"], &declined["id"]]);
    assert_eq!(receiver.forged(), 0);
    provider.stop().await;
}

#[tokio::test]
async fn an_event_can_be_resent_on_demand() {
    let receiver = Receiver::start(0).await;
    let dir = data_dir();
    let provider = Provider::start(with_webhooks(config(&dir), &receiver)).await;
    provider.pay("k-ok", "pm_card_ok").await;
    let events = all_delivered(&provider, &receiver, 1).await;
    let id = &events[0]["id"];
    let resend = provider
        .post(
            &format!("/admin/events/{}/resend", id.as_str().expect("an id")),
            None,
            &json!({}),
        )
        .await
        .expect("an answer");
    assert_eq!(resend.status(), reqwest::StatusCode::ACCEPTED);
    eventually("the event to arrive again", || async {
        (receiver.times(id) == 2).then_some(())
    })
    .await;
    let unknown = provider
        .post("/admin/events/evt_nope/resend", None, &json!({}))
        .await
        .expect("an answer");
    assert_eq!(unknown.status(), reqwest::StatusCode::NOT_FOUND);
    provider.stop().await;
}

#[tokio::test]
async fn a_signature_made_with_another_secret_does_not_verify() {
    let ours = standardwebhooks::Webhook::new(crate::support::SECRET).expect("a secret");
    let theirs = standardwebhooks::Webhook::new("whsec_c2VjcmV0LW9mLXNvbWVvbmUtZWxzZQ==").expect("a secret");
    let now = chrono::Utc::now().timestamp();
    let body = br#"{"id":"evt_1"}"#;
    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", "evt_1".parse().expect("a header"));
    headers.insert("webhook-timestamp", now.to_string().parse().expect("a header"));
    let forged = theirs.sign("evt_1", now, body).expect("signs");
    headers.insert("webhook-signature", forged.parse().expect("a header"));
    assert!(ours.verify(body, &headers).is_err());
}

async fn first_event_id(provider: &Provider) -> String {
    let (_, page) = provider.get("/v1/events?limit=1").await;
    page["data"][0]["id"].as_str().unwrap_or_default().to_owned()
}
