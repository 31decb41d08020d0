//! The 3-D Secure page a `pm_card_3ds` intent's `next_action` points at:
//! the customer (or a browser test) presses "Complete authentication" or
//! "Fail authentication", and is sent back to the intent's `return_url`
//! (303, with `payment_intent` and `redirect_status` added, as Stripe
//! does), or shown a plain "done" page when it has none.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};

use crate::{
    domain::{Input, Intent, Status},
    engine::{CommandError, Provider},
};

pub(crate) fn routes() -> Router<Arc<Provider>> {
    Router::new()
        .route("/authenticate/{id}", get(page))
        .route("/authenticate/{id}/complete", post(complete))
        .route("/authenticate/{id}/fail", post(fail))
}

async fn page(State(provider): State<Arc<Provider>>, Path(id): Path<String>) -> Response {
    let intent = match provider.intent(&id).await {
        Ok(intent) => intent,
        Err(e) => return failure(&e),
    };
    let amount = format!(
        "{}.{:02} {}",
        intent.amount / 100,
        intent.amount % 100,
        intent.currency.to_uppercase()
    );
    let body = if intent.status == Status::RequiresAction {
        // Relative actions: the page works behind any PROVIDER_PUBLIC_URL.
        let id = escape(&intent.id);
        format!(
            "<p>Confirm the payment of <strong>{amount}</strong> ({id}).</p>\n\
             <form method=\"post\" action=\"{id}/complete\"><button type=\"submit\">Complete authentication</button></form>\n\
             <form method=\"post\" action=\"{id}/fail\"><button type=\"submit\">Fail authentication</button></form>"
        )
    } else {
        format!(
            "<p>The payment of <strong>{amount}</strong> is {}: there is nothing to authenticate.</p>",
            status_text(intent.status)
        )
    };
    document("3-D Secure", &body).into_response()
}

async fn complete(State(provider): State<Arc<Provider>>, Path(id): Path<String>) -> Response {
    authenticated(&provider, &id, true).await
}

async fn fail(State(provider): State<Arc<Provider>>, Path(id): Path<String>) -> Response {
    authenticated(&provider, &id, false).await
}

async fn authenticated(provider: &Arc<Provider>, id: &str, passed: bool) -> Response {
    let intent = match provider.move_intent(id, Input::Authenticated { passed }).await {
        Ok(intent) => intent,
        Err(e) => return failure(&e),
    };
    match return_to(&intent) {
        Some(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        None => document(
            "done",
            &format!(
                "<p>done: the payment is {}. You can close this page.</p>",
                status_text(intent.status)
            ),
        )
        .into_response(),
    }
}

/// The intent's `return_url` with `payment_intent` and `redirect_status`.
fn return_to(intent: &Intent) -> Option<String> {
    let mut url = reqwest::Url::parse(intent.return_url.as_deref()?).ok()?;
    let outcome = match intent.status {
        Status::Succeeded => "succeeded",
        Status::Processing => "processing",
        _ => "failed",
    };
    url.query_pairs_mut()
        .append_pair("payment_intent", &intent.id)
        .append_pair("redirect_status", outcome);
    Some(url.into())
}

fn status_text(status: Status) -> &'static str {
    match status {
        Status::RequiresPaymentMethod => "declined",
        Status::RequiresAction => "waiting for authentication",
        Status::Processing => "processing",
        Status::Succeeded => "paid",
        Status::Canceled => "canceled",
    }
}

fn failure(e: &CommandError) -> Response {
    let status = match e {
        CommandError::NotFound { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (
        status,
        document("3-D Secure", &format!("<p>{}</p>", escape(&e.to_string()))),
    )
        .into_response()
}

fn document(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · payment provider emulator</title></head>\n\
         <body><h1>{title}</h1>\n{body}\n</body></html>\n"
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_return_url_keeps_its_query_and_learns_the_outcome() {
        let intent = Intent {
            id: "pi_1".into(),
            amount: 1,
            currency: "eur".into(),
            status: Status::Succeeded,
            payment_method: crate::domain::Card::ThreeDs,
            metadata: Default::default(),
            last_payment_error: None,
            next_action: None,
            amount_received: 1,
            amount_refunded: 0,
            created: 0,
            return_url: Some("https://shop.test/paid?order=o-1".into()),
        };
        assert_eq!(
            return_to(&intent).as_deref(),
            Some("https://shop.test/paid?order=o-1&payment_intent=pi_1&redirect_status=succeeded")
        );
        assert_eq!(
            return_to(&Intent {
                return_url: None,
                ..intent
            }),
            None
        );
        assert_eq!(escape("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
