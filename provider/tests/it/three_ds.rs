//! 3-D Secure: the page a `pm_card_3ds` intent points at, its two buttons,
//! and where each leads.

use reqwest::{StatusCode, Url, header};
use serde_json::{Value, json};

use crate::support::{Provider, answer, client, config, data_dir, eventually};

/// The forms of an HTML page: (button label, action resolved against `page`).
fn forms(page: &Url, html: &str) -> Vec<(String, Url)> {
    html.split("<form")
        .skip(1)
        .map(|form| {
            let form = form.split("</form>").next().expect("a form");
            let action = form
                .split("action=\"")
                .nth(1)
                .and_then(|a| a.split('"').next())
                .expect("an action");
            assert!(form.contains("method=\"post\""), "{form}");
            let label = form
                .split("<button")
                .nth(1)
                .and_then(|b| b.split('>').nth(1))
                .and_then(|b| b.split('<').next())
                .expect("a button");
            (label.to_owned(), page.join(action).expect("a URL"))
        })
        .collect()
}

async fn three_ds(provider: &Provider, key: &str, return_url: Option<&str>) -> Value {
    let mut body = crate::support::intent_body("pm_card_3ds");
    if let Some(url) = return_url {
        body["return_url"] = json!(url);
    }
    let (status, intent) = answer(provider.post("/v1/payment_intents", Some(key), &body).await).await;
    assert_eq!(status, StatusCode::OK, "{intent}");
    intent
}

/// The page's buttons, by label.
async fn buttons(page: &str) -> (StatusCode, Vec<(String, Url)>, String) {
    let response = client().get(page).send().await.expect("the page");
    let status = response.status();
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("text")
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().await.expect("HTML");
    (status, forms(&page.parse().expect("a URL"), &html), html)
}

async fn press(action: &Url) -> reqwest::Response {
    client().post(action.clone()).send().await.expect("an answer")
}

#[tokio::test]
async fn completing_authentication_captures_and_returns_to_the_shop() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let intent = three_ds(&provider, "k-3ds", Some("https://shop.test/checkout/done?order=o-1")).await;
    let id = intent["id"].as_str().expect("an id");
    assert_eq!(intent["status"], "requires_action");
    assert_eq!(intent["amount_received"], 0);
    let next = &intent["next_action"];
    assert_eq!(next["type"], "redirect_to_url");
    let page = next["redirect_to_url"]["url"].as_str().expect("a page");
    assert_eq!(page, provider.at(&format!("/authenticate/{id}")));
    assert_eq!(
        next["redirect_to_url"]["return_url"],
        "https://shop.test/checkout/done?order=o-1"
    );

    let (status, buttons, _) = buttons(page).await;
    assert_eq!(status, StatusCode::OK);
    let labels: Vec<&str> = buttons.iter().map(|(label, _)| label.as_str()).collect();
    assert_eq!(labels, ["Complete authentication", "Fail authentication"]);

    let response = press(&buttons[0].1).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[header::LOCATION].to_str().expect("a location");
    assert_eq!(
        location,
        format!("https://shop.test/checkout/done?order=o-1&payment_intent={id}&redirect_status=succeeded")
    );
    let paid = provider.intent(id).await;
    assert_eq!(paid["status"], "succeeded");
    assert_eq!(paid["amount_received"], 1299);
    assert_eq!(paid["next_action"], json!(null));

    // Done: the page has nothing left to press, and a second press changes nothing.
    let (_, after, html) = self::buttons(page).await;
    assert!(after.is_empty(), "{html}");
    assert_eq!(press(&buttons[1].1).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(provider.intent(id).await["status"], "succeeded");

    let events = crate::events::all_events(&provider).await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["payment_intent.requires_action", "payment_intent.succeeded"]);
    provider.stop().await;
}

#[tokio::test]
async fn failing_authentication_declines_and_without_a_return_url_says_done() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let intent = three_ds(&provider, "k-3ds", None).await;
    let id = intent["id"].as_str().expect("an id");
    let page = intent["next_action"]["redirect_to_url"]["url"]
        .as_str()
        .expect("a page");
    assert_eq!(intent["next_action"]["redirect_to_url"]["return_url"], json!(null));
    let (_, buttons, _) = buttons(page).await;
    let (label, fail) = &buttons[1];
    assert_eq!(label, "Fail authentication");

    let response = press(fail).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.expect("a page").contains("done"));
    let declined = provider.intent(id).await;
    assert_eq!(declined["status"], "requires_payment_method");
    assert_eq!(declined["amount_received"], 0);
    assert_eq!(declined["last_payment_error"]["decline_code"], "authentication_failed");
    provider.stop().await;
}

#[tokio::test]
async fn a_canceled_intent_cannot_be_authenticated_afterwards() {
    let dir = data_dir();
    let provider = Provider::start(config(&dir)).await;
    let intent = three_ds(&provider, "k-3ds", Some("https://shop.test/back")).await;
    let id = intent["id"].as_str().expect("an id");
    let page = intent["next_action"]["redirect_to_url"]["url"]
        .as_str()
        .expect("a page");
    let (_, buttons, _) = buttons(page).await;
    let (status, canceled) = provider.cancel(id).await;
    assert_eq!((status, &canceled["status"]), (StatusCode::OK, &json!("canceled")));

    let response = press(&buttons[0].1).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()[header::LOCATION].to_str().expect("a location");
    assert!(location.ends_with("redirect_status=failed"), "{location}");
    let line = eventually("the ledger", || async { provider.ledger().await.pop() }).await;
    assert_eq!((&line["voided"], &line["captured"]), (&json!(true), &json!(0)));
    assert_eq!(provider.intent(id).await["status"], "canceled");
    let missing = client()
        .get(provider.at("/authenticate/pi_nope"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    provider.stop().await;
}
