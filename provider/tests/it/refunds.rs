//! Refunds over HTTP: at most what was captured, pending then succeeded,
//! idempotent like intents.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Provider, answer, config, data_dir, error, eventually};

async fn refund(provider: &Provider, key: Option<&str>, body: Value) -> (StatusCode, Value) {
    answer(provider.post("/v1/refunds", key, &body).await).await
}

#[tokio::test]
async fn a_captured_payment_is_refunded_up_to_what_was_taken() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let (_, paid) = provider.pay("key-ok", "pm_card_ok").await;
    let id = paid["id"].as_str().expect("an id");

    let (status, part) = refund(&provider, Some("r-1"), json!({"payment_intent": id, "amount": 500})).await;
    assert_eq!(status, StatusCode::OK, "{part}");
    assert_eq!(part["object"], "refund");
    assert_eq!(part["status"], "pending");
    assert_eq!(part["amount"], 500);
    assert_eq!(part["payment_intent"], id);
    assert!(part["id"].as_str().is_some_and(|r| r.starts_with("re_")), "{part}");
    assert_eq!(provider.intent(id).await["amount_refunded"], 500);

    // The same key: the same refund, nothing more given back.
    let (status, again) = refund(&provider, Some("r-1"), json!({"payment_intent": id, "amount": 500})).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &part["id"]));
    let (status, conflict) = refund(&provider, Some("r-1"), json!({"payment_intent": id, "amount": 400})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");

    let (status, too_much) = refund(&provider, Some("r-2"), json!({"payment_intent": id, "amount": 800})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&too_much)["code"], "amount_too_large");

    let (status, rest) = refund(&provider, Some("r-3"), json!({"payment_intent": id})).await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(rest["amount"], 799, "the whole remaining amount");
    let (status, nothing_left) = refund(&provider, Some("r-4"), json!({"payment_intent": id, "amount": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&nothing_left)["code"], "charge_already_refunded");

    for pending in [&part, &rest] {
        let path = format!("/v1/refunds/{}", pending["id"].as_str().expect("an id"));
        let settled = eventually("the refund to succeed", || async {
            let (_, refund) = provider.get(&path).await;
            (refund["status"] == "succeeded").then_some(refund)
        })
        .await;
        assert_eq!(settled["amount"], pending["amount"]);
    }
    let line = &provider.ledger().await[0];
    assert_eq!((&line["captured"], &line["refunded"]), (&json!(1299), &json!(1299)));
    assert_eq!(line["refund_pending"], 0);
    provider.stop().await;
}

#[tokio::test]
async fn only_a_succeeded_payment_can_be_refunded() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    for (key, card) in [("k-declined", "pm_card_declined"), ("k-async", "pm_card_async")] {
        let (_, intent) = provider.pay(key, card).await;
        let refund_key = format!("refund-{key}");
        let (status, refused) = refund(&provider, Some(&refund_key), json!({"payment_intent": intent["id"]})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{card}: {refused}");
        assert_eq!(error(&refused)["code"], "payment_intent_unexpected_state");
    }
    // A key is for one call: an intent's key does not also make a refund.
    let (status, reused) = refund(&provider, Some("k-declined"), json!({"payment_intent": "pi_nope"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{reused}");
    let (status, unknown) = refund(&provider, Some("k-x"), json!({"payment_intent": "pi_nope"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&unknown)["param"], "payment_intent");
    let (status, no_key) = refund(&provider, None, json!({"payment_intent": "pi_nope"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&no_key)["param"], "Idempotency-Key");
    let (status, _) = provider.get("/v1/refunds/re_nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(provider.ledger().await.iter().all(|l| l["refunded"] == 0));
    provider.stop().await;
}
