//! `/admin`: what a developer, `cargo xtask verify` and chaos runs read or
//! set on the emulator. No authentication: it is a development tool on
//! loopback (see README.md).

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use crate::{
    api::{self, ApiError},
    domain::LedgerLine,
    engine::Provider,
    faults::Faults,
};

pub(crate) const LEDGER: &str = "/admin/ledger";
pub(crate) const FAULTS: &str = "/admin/faults";

pub(crate) fn routes() -> Router<Arc<Provider>> {
    Router::new()
        .route(LEDGER, get(ledger))
        .route("/admin/events/{id}/resend", post(resend))
        .route(FAULTS, get(faults).put(set_faults))
}

/// `GET /admin/ledger`: `{"data": [line, ...]}`, oldest intent first.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ledger {
    pub(crate) data: Vec<LedgerLine>,
}

async fn ledger(State(provider): State<Arc<Provider>>) -> Json<Ledger> {
    Json(Ledger {
        data: provider.ledger().await,
    })
}

/// `POST /admin/events/{id}/resend`: 202, and the event's webhook is sent
/// again (retried as any other) whether or not it was delivered before.
async fn resend(State(provider): State<Arc<Provider>>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if provider.webhooks.is_none() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            kind: "invalid_request_error",
            code: "webhooks_off",
            message: "No PROVIDER_WEBHOOK_URL is configured: there is nowhere to send it.".into(),
            param: None,
        });
    }
    provider.resend(&id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `GET /admin/faults`: the knobs as set.
async fn faults(State(provider): State<Arc<Provider>>) -> Json<Faults> {
    Json(provider.faults.get())
}

/// `PUT /admin/faults`: sets every knob (one left out is off) and answers
/// them as now set.
async fn set_faults(State(provider): State<Arc<Provider>>, bytes: Bytes) -> Result<Json<Faults>, ApiError> {
    let faults: Faults = api::body(&bytes)?;
    faults.check()?;
    tracing::warn!(?faults, "fault knobs set");
    provider.faults.set(faults.clone());
    Ok(Json(faults))
}
