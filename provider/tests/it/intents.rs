//! Payment intents over HTTP: each test card's flow, idempotency, cancel,
//! and a restart.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Provider, config, data_dir, error, intent_body};

#[tokio::test]
async fn an_ok_card_is_captured_at_once() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let (status, intent) = provider.pay("key-ok", "pm_card_ok").await;
    assert_eq!(status, StatusCode::OK, "{intent}");
    assert_eq!(intent["object"], "payment_intent");
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount"], 1299);
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["amount_received"], 1299);
    assert_eq!(intent["amount_refunded"], 0);
    assert_eq!(intent["metadata"]["order_id"], "order-1");
    assert_eq!(intent["last_payment_error"], json!(null));
    assert_eq!(intent["next_action"], json!(null));
    let id = intent["id"].as_str().expect("an id");
    assert!(id.starts_with("pi_") && id.len() == 35, "{id}");
    assert_eq!(provider.intent(id).await, intent);
    let (status, missing) = provider.get("/v1/payment_intents/pi_nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&missing)["code"], "resource_missing");
    let (status, unknown) = provider.get("/v1/charges").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&unknown)["type"], "invalid_request_error");
    provider.stop().await;
}

#[tokio::test]
async fn a_declined_card_takes_nothing_and_says_why() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let (status, intent) = provider.pay("key-declined", "pm_card_declined").await;
    assert_eq!(status, StatusCode::OK, "{intent}");
    assert_eq!(intent["status"], "requires_payment_method");
    assert_eq!(intent["amount_received"], 0);
    assert_eq!(intent["last_payment_error"]["decline_code"], "card_declined");
    assert_eq!(intent["last_payment_error"]["code"], "card_declined");
    provider.stop().await;
}

#[tokio::test]
async fn a_malformed_call_is_refused_naming_what_is_wrong() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let (status, body) = provider.pay("key-visa", "pm_card_visa").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&body)["type"], "invalid_request_error");
    assert_eq!(error(&body)["param"], "payment_method");
    assert!(
        error(&body)["message"]
            .as_str()
            .is_some_and(|m| m.contains("payment_method")),
        "{body}"
    );

    let no_key = provider
        .post("/v1/payment_intents", None, &intent_body("pm_card_ok"))
        .await;
    let (status, body) = crate::support::answer(no_key).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&body)["param"], "Idempotency-Key");

    let unknown_field = provider
        .post(
            "/v1/payment_intents",
            Some("key-x"),
            &json!({"amount": 1, "currency": "eur", "payment_method": "pm_card_ok", "amout": 2}),
        )
        .await;
    let (status, body) = crate::support::answer(unknown_field).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error(&body)["type"], "invalid_request_error");

    // None of them created anything, nor used up its key.
    let (status, intent) = provider.pay("key-visa", "pm_card_ok").await;
    assert_eq!((status, &intent["status"]), (StatusCode::OK, &json!("succeeded")));
    assert_eq!(provider.ledger().await.len(), 1);
    provider.stop().await;
}

#[tokio::test]
async fn the_same_key_answers_the_same_intent_and_a_different_body_conflicts() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let (first_status, first) = provider.pay("key-same", "pm_card_ok").await;
    let (again_status, again) = provider.pay("key-same", "pm_card_ok").await;
    assert_eq!((first_status, &first), (again_status, &again));
    let (status, conflict) = provider.pay("key-same", "pm_card_declined").await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(error(&conflict)["type"], "idempotency_error");
    assert!(error(&conflict)["message"].is_string());
    let ledger = provider.ledger().await;
    assert_eq!(ledger.len(), 1, "one charge: {ledger:?}");
    assert_eq!(ledger[0]["captured"], 1299);
    provider.stop().await;
}

#[tokio::test]
async fn a_timeout_card_charges_but_loses_its_first_answer() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let first = provider
        .post(
            "/v1/payment_intents",
            Some("key-timeout"),
            &intent_body("pm_card_timeout"),
        )
        .await;
    let lost = first.expect_err("the first answer is lost");
    assert!(!lost.is_timeout(), "the connection closes at once: {lost:?}");
    assert_eq!(provider.ledger().await.len(), 1, "yet the charge was made");

    let (status, intent) = provider.pay("key-timeout", "pm_card_timeout").await;
    assert_eq!(status, StatusCode::OK, "{intent}");
    assert_eq!(intent["status"], "succeeded");
    let ledger = provider.ledger().await;
    assert_eq!(ledger.len(), 1, "the retry charged nothing more");
    assert_eq!(ledger[0]["intent"], intent["id"]);
    assert_eq!(ledger[0]["captured"], 1299);
    provider.stop().await;
}

#[tokio::test]
async fn async_cards_are_processing_then_settle() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let (_, paid) = provider.pay("key-async", "pm_card_async").await;
    let (_, declined) = provider.pay("key-async-declined", "pm_card_async_declined").await;
    assert_eq!(paid["status"], "processing");
    assert_eq!(declined["status"], "processing");
    assert_eq!(paid["amount_received"], 0);

    let paid = provider
        .intent_reaches(paid["id"].as_str().expect("an id"), "succeeded")
        .await;
    assert_eq!(paid["amount_received"], 1299);
    let declined = provider
        .intent_reaches(declined["id"].as_str().expect("an id"), "requires_payment_method")
        .await;
    assert_eq!(declined["last_payment_error"]["decline_code"], "card_declined");
    provider.stop().await;
}

#[tokio::test]
async fn cancel_voids_what_is_not_captured_and_refuses_what_is() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let (_, processing) = provider.pay("key-async", "pm_card_async").await;
    let id = processing["id"].as_str().expect("an id");
    let (status, canceled) = provider.cancel(id).await;
    assert_eq!(status, StatusCode::OK, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    let (status, again) = provider.cancel(id).await;
    assert_eq!((status, &again["status"]), (StatusCode::OK, &json!("canceled")));

    let (_, declined) = provider.pay("key-declined", "pm_card_declined").await;
    let (status, void) = provider.cancel(declined["id"].as_str().expect("an id")).await;
    assert_eq!((status, &void["status"]), (StatusCode::OK, &json!("canceled")));

    let (_, captured) = provider.pay("key-ok", "pm_card_ok").await;
    let (status, refused) = provider.cancel(captured["id"].as_str().expect("an id")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(error(&refused)["code"], "payment_intent_unexpected_state");

    let (status, _) = provider.cancel("pi_nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Well past the async delay the canceled intent has not captured.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = provider.intent(id).await;
    assert_eq!(
        (&later["status"], &later["amount_received"]),
        (&json!("canceled"), &json!(0))
    );
    let line = provider
        .ledger()
        .await
        .into_iter()
        .find(|l| l["intent"] == id)
        .expect("in the ledger");
    assert_eq!((&line["voided"], &line["captured"]), (&json!(true), &json!(0)));
    provider.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_intents_keys_and_the_ledger_and_settles_what_was_processing() {
    let dir = data_dir();
    let config = || crate::support::config(&dir);
    let provider = Provider::start(config()).await;
    let (_, ok) = provider.pay("key-ok", "pm_card_ok").await;
    let (_, processing) = provider.pay("key-async", "pm_card_async").await;
    let ledger = provider.ledger().await;
    provider.stop().await;

    let provider = Provider::start(crate::support::Config {
        // Long enough that the settlement happens after the restart.
        async_delay: Duration::from_millis(500),
        ..config()
    })
    .await;
    assert_eq!(provider.intent(ok["id"].as_str().expect("an id")).await, ok);
    assert_eq!(provider.ledger().await[0], ledger[0]);
    let (_, again) = provider.pay("key-ok", "pm_card_ok").await;
    assert_eq!(again, ok, "the key is remembered");
    let settled = provider
        .intent_reaches(processing["id"].as_str().expect("an id"), "succeeded")
        .await;
    assert_eq!(settled["amount_received"], 1299);
    assert_eq!(provider.ledger().await.len(), 2);
    provider.stop().await;
}
