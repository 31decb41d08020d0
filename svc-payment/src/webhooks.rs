//! gRPC adapter: `shop.payment.v1.PaymentWebhookService`, the provider's
//! webhooks as the gateway's `POST /webhooks/payments` hands them on.
//!
//! A webhook is checked (Standard Webhooks: HMAC-SHA256 over
//! `id.timestamp.body`, compared in constant time, against the current
//! secret and the previous one while a rotation is under way; a timestamp
//! more than five minutes away is a replay), stored by its event id, and
//! only then answered: what is answered OK is never lost, and a repeat
//! answers OK and changes nothing. Handling comes after
//! ([`crate::settlement`]). Refusals say little (the gateway passes on
//! only the status); the reason is logged and counted.

use std::sync::Arc;

use serde::Deserialize;
use shop_proto::payment::v1 as pb;
use shop_runtime::{series, webhook_secret::WebhookSecret};
use sqlx::PgPool;
use standardwebhooks::WebhookError;
use tonic::{Request, Response, Status};

use crate::{
    provider::{PaymentProvider, ProviderRecords, ProviderRefunds},
    settlement::Settlement,
    store,
};

/// The largest webhook body taken (the gateway's cap too).
pub const MAX_WEBHOOK_BYTES: usize = shop_runtime::registry::PAYMENT_WEBHOOK_MAX_BYTES;

pub(crate) struct WebhookApi<P> {
    pub pool: PgPool,
    /// The current secret first, then the previous one.
    pub secrets: Vec<WebhookSecret>,
    pub settlement: Arc<Settlement<P>>,
}

/// What became of a webhook, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Stored,
    Duplicate,
    BadSignature,
    Stale,
    NoSecret,
    Malformed,
    TooLarge,
    Unavailable,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::BadSignature => "bad_signature",
            Self::Stale => "stale",
            Self::NoSecret => "no_secret",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
        }
    }

    fn count(self) {
        metrics::counter!(series::WEBHOOKS, "result" => self.as_str()).increment(1);
    }

    /// The answer to the gateway, whose status it passes on.
    fn status(self) -> Result<(), Status> {
        match self {
            Self::Stored | Self::Duplicate => Ok(()),
            Self::BadSignature | Self::Stale | Self::NoSecret => {
                Err(Status::unauthenticated("the webhook's signature does not verify"))
            }
            Self::Malformed | Self::TooLarge => Err(Status::invalid_argument("the webhook is not an event")),
            Self::Unavailable => Err(Status::unavailable("the webhook cannot be stored now; send it again")),
        }
    }
}

/// The parts of an event used: its id, and the charge it names.
#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: Object,
}

#[derive(Debug, Deserialize)]
struct Object {
    object: String,
    id: String,
    /// A refund's charge.
    #[serde(default)]
    payment_intent: Option<String>,
}

impl Event {
    /// The charge (intent) the event is about.
    fn charge_id(&self) -> Option<&str> {
        let object = &self.data.object;
        match object.object.as_str() {
            "payment_intent" => Some(object.id.as_str()),
            "refund" => object.payment_intent.as_deref(),
            _ => None,
        }
    }
}

/// Checks the signature against each secret in turn.
fn verify(secrets: &[WebhookSecret], body: &[u8], headers: &http::HeaderMap) -> Result<(), Verdict> {
    if secrets.is_empty() {
        return Err(Verdict::NoSecret);
    }
    let mut verdict = Verdict::BadSignature;
    for secret in secrets {
        match secret.signer().verify(body, headers) {
            Ok(()) => return Ok(()),
            Err(WebhookError::TimestampTooOldError | WebhookError::FutureTimestampError) => verdict = Verdict::Stale,
            Err(_) => {}
        }
    }
    Err(verdict)
}

fn header_map(headers: &std::collections::HashMap<String, String>) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            map.insert(name, value);
        }
    }
    map
}

impl<P: PaymentProvider + ProviderRecords + ProviderRefunds> WebhookApi<P> {
    async fn receive(&self, request: pb::ReceiveWebhookRequest) -> Verdict {
        let body = request.body;
        if body.len() > MAX_WEBHOOK_BYTES {
            tracing::warn!(
                bytes = body.len(),
                "webhook refused: larger than {MAX_WEBHOOK_BYTES} bytes"
            );
            return Verdict::TooLarge;
        }
        if let Err(verdict) = verify(&self.secrets, &body, &header_map(&request.headers)) {
            let webhook_id = request.headers.get("webhook-id").map(String::as_str);
            tracing::warn!(
                ?webhook_id,
                verdict = verdict.as_str(),
                "webhook refused: its signature does not verify"
            );
            return verdict;
        }
        let (event, json) = match (
            serde_json::from_slice::<Event>(&body),
            serde_json::from_slice::<serde_json::Value>(&body),
        ) {
            (Ok(event), Ok(json)) => (event, json),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "webhook refused: signed, but not an event");
                return Verdict::Malformed;
            }
        };
        let Some(charge_id) = event.charge_id().map(str::to_owned) else {
            // Signed and well-formed, about nothing svc-payment keeps: taken,
            // so the provider stops sending it.
            tracing::info!(event_id = %event.id, kind = %event.kind, "webhook about no charge; nothing to do");
            return Verdict::Stored;
        };
        let stored = store::store_webhook(
            &self.pool,
            &event.id,
            &event.kind,
            &event.data.object.object,
            &charge_id,
            &json,
        )
        .await;
        match stored {
            Ok(true) => {
                let settlement = self.settlement.clone();
                tokio::spawn(async move { settlement.handle_webhook(&event.id, &charge_id).await });
                Verdict::Stored
            }
            Ok(false) => Verdict::Duplicate,
            Err(e) => {
                tracing::error!(event_id = %event.id, error = %e, "cannot store a webhook; the provider will send it again");
                Verdict::Unavailable
            }
        }
    }
}

#[tonic::async_trait]
impl<P: PaymentProvider + ProviderRecords + ProviderRefunds> pb::payment_webhook_service_server::PaymentWebhookService
    for WebhookApi<P>
{
    async fn receive_webhook(
        &self,
        request: Request<pb::ReceiveWebhookRequest>,
    ) -> Result<Response<pb::ReceiveWebhookResponse>, Status> {
        let verdict = self.receive(request.into_inner()).await;
        verdict.count();
        verdict.status().map(|()| Response::new(pb::ReceiveWebhookResponse {}))
    }
}
