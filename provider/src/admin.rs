//! `/admin`: what a developer, `cargo xtask verify` and chaos runs read or
//! set on the emulator. No authentication: it is a development tool on
//! loopback (see README.md).

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

use crate::engine::Provider;

pub(crate) fn routes() -> Router<Arc<Provider>> {
    Router::new().route("/admin/ledger", get(ledger))
}

/// `{"data": [{"intent","order_id","amount","currency","status","captured","voided","refunded","refund_pending"}]}`,
/// oldest intent first.
async fn ledger(State(provider): State<Arc<Provider>>) -> Json<Value> {
    Json(json!({ "data": provider.ledger().await }))
}
