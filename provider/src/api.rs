//! The `/v1` JSON API, Stripe-shaped: bodies in, objects or
//! `{"error":{"type","code","message","param"}}` out. A thin adapter over
//! the engine's commands.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::json;

use crate::{
    domain::{Card, FieldError, Input, IntentRequest, Object, RefundRequest},
    engine::{CommandError, Provider},
    serve::LoseAnswer,
};

pub(crate) fn routes() -> Router<Arc<Provider>> {
    Router::new()
        .route("/v1/payment_intents", post(create_intent))
        .route("/v1/payment_intents/{id}", get(intent))
        .route("/v1/payment_intents/{id}/cancel", post(cancel_intent))
        .route("/v1/refunds", post(create_refund))
        .route("/v1/refunds/{id}", get(refund))
        .route("/v1/events", get(events))
}

/// An API error, as Stripe shapes it.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    /// `invalid_request_error`, `idempotency_error` or `api_error`.
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
}

impl ApiError {
    pub(crate) fn invalid(code: &'static str, message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"type": self.kind, "code": self.code, "message": self.message});
        if let Some(param) = self.param {
            error["param"] = json!(param);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::invalid("parameter_invalid", e.message, Some(&e.param))
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound { .. } => Self {
                status: StatusCode::NOT_FOUND,
                kind: "invalid_request_error",
                code: "resource_missing",
                message: e.to_string(),
                param: Some("id".into()),
            },
            CommandError::KeyReused { .. } => Self {
                status: StatusCode::CONFLICT,
                kind: "idempotency_error",
                code: "idempotency_key_reused",
                message: format!("{e}; use a new key for a new request"),
                param: None,
            },
            CommandError::UnknownReference { param, .. } => {
                Self::invalid("resource_missing", e.to_string(), Some(param))
            }
            CommandError::Refused(refusal) => Self::invalid(refusal.code, refusal.message, None),
            CommandError::Journal(e) => {
                tracing::error!(error = %e, "the journal cannot be written");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    kind: "api_error",
                    code: "journal_unavailable",
                    message: "The provider cannot record changes; nothing was done.".into(),
                    param: None,
                }
            }
        }
    }
}

pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` header, required on the calls that create.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let missing = || {
        ApiError::invalid(
            "parameter_missing",
            "An Idempotency-Key header (1 to 255 characters) is required on this call.",
            Some("Idempotency-Key"),
        )
    };
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?
        .trim();
    if key.is_empty() || key.len() > 255 {
        return Err(missing());
    }
    Ok(key.to_owned())
}

/// A JSON body, or a 400 that says what is wrong with it.
pub(crate) fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("parameter_invalid", format!("Invalid JSON body: {e}"), None))
}

async fn create_intent(
    State(provider): State<Arc<Provider>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let new = body::<IntentRequest>(&bytes)?.validate()?;
    let answer = provider.create_intent(&key, new).await?;
    let lose = answer.fresh && answer.object.payment_method == Card::Timeout;
    let mut response = Json(Object::PaymentIntent(answer.object)).into_response();
    if lose {
        // The charge is made; its first answer never arrives.
        response.extensions_mut().insert(LoseAnswer);
    }
    Ok(response)
}

async fn intent(State(provider): State<Arc<Provider>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let intent = provider.intent(&id).await?;
    Ok(Json(Object::PaymentIntent(intent)).into_response())
}

async fn cancel_intent(State(provider): State<Arc<Provider>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let intent = provider.move_intent(&id, Input::Cancel).await?;
    Ok(Json(Object::PaymentIntent(intent)).into_response())
}

async fn create_refund(
    State(provider): State<Arc<Provider>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let new = body::<RefundRequest>(&bytes)?.validate()?;
    let answer = provider.create_refund(&key, new).await?;
    Ok(Json(Object::Refund(answer.object)).into_response())
}

async fn refund(State(provider): State<Arc<Provider>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let refund = provider.refund(&id).await?;
    Ok(Json(Object::Refund(refund)).into_response())
}

/// Events per page when `limit` is not given, and at most.
const EVENTS_LIMIT: (usize, usize) = (10, 100);

#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/events?after=<event id>&limit=N`: the events in the order they
/// happened, `{"data": [...], "has_more": bool}`.
async fn events(
    State(provider): State<Arc<Provider>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("parameter_invalid", e.body_text(), None))?;
    let (default, most) = EVENTS_LIMIT;
    let limit = match query.limit.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        None => default,
        Some(raw) => raw.parse().ok().filter(|n| (1..=most).contains(n)).ok_or_else(|| {
            ApiError::invalid(
                "parameter_invalid",
                format!("Invalid limit {raw:?}: from 1 to {most}."),
                Some("limit"),
            )
        })?,
    };
    let after = query.after.as_deref().map(str::trim).filter(|a| !a.is_empty());
    let (data, has_more) = provider.events(after, limit).await?;
    Ok(Json(json!({ "object": "list", "data": data, "has_more": has_more })).into_response())
}

/// Any other path: a JSON 404, as for an unknown object.
pub(crate) async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: "resource_missing",
        message: format!("Unrecognized request URL: {}", uri.path()),
        param: None,
    }
}
