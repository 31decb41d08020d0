//! `POST /webhooks/payments`: the payment provider's signed webhooks
//! (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
//! `webhook-signature`, a JSON body), taken on the public port as plain
//! HTTP (HTTP/1.1, or HTTP/2) beside gRPC and the storefront, and handed to
//! svc-payment's `PaymentWebhookService/ReceiveWebhook`, which checks the
//! signature and stores the event.
//!
//! The gateway takes no token here (the signature is the authentication,
//! and svc-payment checks it) and decodes nothing: it counts the call
//! against the peer address's anonymous rate limit, reads the body up to
//! [`MAX_BODY_BYTES`], and forwards the `webhook-*` headers and
//! `content-type` (lower-case names) with the body byte for byte, through
//! the same upstream, breakers and deadline as any call ([`forwarding`]).
//! svc-payment's answer becomes the provider's: OK → 200 `{}`,
//! UNAUTHENTICATED → 401, INVALID_ARGUMENT → 400, anything else, or no
//! answer at all → 503, so the provider sends it again. A refusal says
//! nothing more in its body; the log has the reason.
//!
//! Outcomes at the gateway are counted in [`series::WEBHOOKS`]`{result}`:
//! `forwarded` (svc-payment answered; it counts its own verdicts under the
//! same name), `too_large`, `rate_limited`, `incomplete` (the body did not
//! arrive whole in time) and `upstream_unavailable`.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use prost::Message;
use shop_proto::payment::v1::ReceiveWebhookRequest;
use shop_runtime::{
    series,
    trace::{Carrier, continue_trace},
    upstream::Upstream,
};
use tonic::{Code, Status, body::Body};
use tracing::{Instrument, field::Empty};

use crate::{
    forwarding::{self, CallPlan},
    rate_limits::{RateKey, RateLimits},
    upstreams::Upstreams,
};

/// Where the provider sends its webhooks: the one path of this route, as
/// the registry names it for whoever tells the provider.
pub const PATH: &str = shop_runtime::registry::PAYMENT_WEBHOOKS_PATH;

/// The largest body taken: a provider's event is a few KB. A longer one
/// is refused (413) without reading further.
pub const MAX_BODY_BYTES: usize = shop_runtime::registry::PAYMENT_WEBHOOK_MAX_BYTES;

/// The service svc-payment takes them with, and its one method.
const SERVICE: &str = "shop.payment.v1.PaymentWebhookService";
const RECEIVE_WEBHOOK: &str = "/shop.payment.v1.PaymentWebhookService/ReceiveWebhook";

/// The prefix of the headers forwarded besides `content-type`.
const WEBHOOK_HEADER_PREFIX: &str = "webhook-";

/// What became of a webhook at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Forwarded,
    TooLarge,
    RateLimited,
    Incomplete,
    UpstreamUnavailable,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::Incomplete => "incomplete",
            Self::UpstreamUnavailable => "upstream_unavailable",
        }
    }

    fn count(self) {
        metrics::counter!(series::WEBHOOKS, "result" => self.label()).increment(1);
    }
}

struct State {
    /// svc-payment, when the gateway knows it.
    upstream: Option<Arc<Upstream>>,
    rate_limits: Arc<RateLimits>,
    /// How long the body may take to arrive, and then svc-payment to answer.
    request_timeout: Duration,
}

/// The webhook route (cheap to clone).
#[derive(Clone)]
pub struct Webhooks {
    state: Arc<State>,
}

impl Webhooks {
    pub fn new(upstreams: &Upstreams, rate_limits: Arc<RateLimits>, request_timeout: Duration) -> Self {
        Self {
            state: Arc::new(State {
                upstream: upstreams.owner_of(SERVICE).cloned(),
                rate_limits,
                request_timeout,
            }),
        }
    }

    /// Answers `request` (to [`PATH`]) from `peer`.
    pub fn serve<B>(
        &self,
        request: Request<B>,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Response<Body>, Infallible>> + use<B>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let state = self.state.clone();
        let span = tracing::info_span!(
            "webhook",
            otel.name = %format_args!("POST {PATH}"),
            otel.kind = "server",
            %peer,
            trace_id = Empty,
        );
        continue_trace(&span, &Carrier::from_headers(request.headers()));
        async move { Ok(state.receive(request, peer).await) }.instrument(span)
    }
}

/// An answer with no body but its status (and `headers`).
fn answer(status: StatusCode, headers: &[(header::HeaderName, HeaderValue)]) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// The answer to a webhook svc-payment took: an empty JSON object.
fn accepted() -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(Bytes::from_static(b"{}"))));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The headers svc-payment needs: every `webhook-*` one and `content-type`,
/// by lower-case name (as `http` keeps them), repeated values joined as
/// HTTP joins them. A value that is not UTF-8 is left out; the signature
/// check then refuses the webhook.
fn forwarded_headers(headers: &HeaderMap) -> HashMap<String, String> {
    let mut forwarded: HashMap<String, String> = HashMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        if name != header::CONTENT_TYPE.as_str() && !name.starts_with(WEBHOOK_HEADER_PREFIX) {
            continue;
        }
        let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
            tracing::debug!(header = name, "a webhook header that is not UTF-8 is left out");
            continue;
        };
        forwarded
            .entry(name.to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    forwarded
}

/// One length-prefixed gRPC message.
fn framed(message: &impl Message) -> Bytes {
    let payload = message.encode_to_vec();
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut framed = Vec::with_capacity(payload.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(&payload);
    Bytes::from(framed)
}

/// The HTTP answer to svc-payment's status.
fn http_status_of(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        // UNAVAILABLE (it could not store the event), a deadline, anything
        // unforeseen: the provider sends it again later.
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The status a gRPC answer ends with: in its headers (trailers-only) or
/// in its trailers, read within `deadline`. `None` when there is none (not
/// a gRPC answer, or it broke off).
async fn status_of(response: Response<Body>, deadline: Duration) -> Option<Status> {
    if let Some(status) = Status::from_header_map(response.headers()) {
        return Some(status);
    }
    let whole = tokio::time::timeout(deadline, response.into_body().collect())
        .await
        .ok()?
        .ok()?;
    whole.trailers().and_then(Status::from_header_map)
}

impl State {
    async fn receive<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if request.method() != Method::POST {
            return answer(
                StatusCode::METHOD_NOT_ALLOWED,
                &[(header::ALLOW, HeaderValue::from_static("POST"))],
            );
        }
        // Before anything is read: a flood from one address costs nothing.
        if let Err(refused) = self.rate_limits.check(RateKey::Peer(peer.ip()), false) {
            Outcome::RateLimited.count();
            tracing::debug!(retry_after = ?refused.retry_after, "webhook refused over the anonymous rate limit");
            let seconds = refused.retry_after.as_millis().div_ceil(1000).max(1);
            let retry_after = HeaderValue::from_str(&seconds.to_string()).unwrap_or(HeaderValue::from_static("1"));
            return answer(StatusCode::TOO_MANY_REQUESTS, &[(header::RETRY_AFTER, retry_after)]);
        }
        let declared_length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_length.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            Outcome::TooLarge.count();
            tracing::info!(
                declared_length,
                limit = MAX_BODY_BYTES,
                "webhook refused: body too large"
            );
            return answer(StatusCode::PAYLOAD_TOO_LARGE, &[]);
        }

        let (parts, body) = request.into_parts();
        let body = match tokio::time::timeout(self.request_timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await
        {
            Ok(Ok(whole)) => whole.to_bytes(),
            Ok(Err(e)) if e.is::<LengthLimitError>() => {
                Outcome::TooLarge.count();
                tracing::info!(limit = MAX_BODY_BYTES, "webhook refused: body too large");
                return answer(StatusCode::PAYLOAD_TOO_LARGE, &[]);
            }
            Ok(Err(e)) => {
                Outcome::Incomplete.count();
                tracing::info!(error = %e, "webhook body broke off");
                return answer(StatusCode::BAD_REQUEST, &[]);
            }
            Err(_elapsed) => {
                Outcome::Incomplete.count();
                tracing::info!(timeout = ?self.request_timeout, "webhook body did not arrive in time");
                return answer(StatusCode::REQUEST_TIMEOUT, &[]);
            }
        };
        let headers = forwarded_headers(&parts.headers);
        let webhook_id = headers.get("webhook-id").cloned().unwrap_or_default();

        let Some(upstream) = &self.upstream else {
            Outcome::UpstreamUnavailable.count();
            tracing::warn!(webhook_id, "webhook not forwarded: no upstream serves {SERVICE}");
            return answer(StatusCode::SERVICE_UNAVAILABLE, &[]);
        };
        let message = framed(&ReceiveWebhookRequest {
            headers,
            body: body.to_vec(),
        });
        // svc-payment's own time, however long the body took: a deadline of
        // the gateway's that expires counts against its breaker.
        let plan = CallPlan::new(None, self.request_timeout, false, message.len());
        let mut call = Request::new(Body::new(Full::new(message)));
        *call.method_mut() = Method::POST;
        *call.uri_mut() = http::Uri::from_static(RECEIVE_WEBHOOK);
        call.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        let sent = Instant::now();
        let response = match forwarding::forward(upstream, call, plan).await {
            Ok(response) => response,
            Err(e) => {
                Outcome::UpstreamUnavailable.count();
                tracing::warn!(webhook_id, error = %e, "webhook not taken by svc-payment");
                return answer(StatusCode::SERVICE_UNAVAILABLE, &[]);
            }
        };
        let Some(status) = status_of(response, plan.deadline.saturating_sub(sent.elapsed())).await else {
            Outcome::UpstreamUnavailable.count();
            tracing::warn!(webhook_id, "svc-payment's answer to a webhook carried no gRPC status");
            return answer(StatusCode::SERVICE_UNAVAILABLE, &[]);
        };
        Outcome::Forwarded.count();
        let http_status = http_status_of(status.code());
        match status.code() {
            Code::Ok => return accepted(),
            Code::Unauthenticated | Code::InvalidArgument => tracing::info!(
                webhook_id,
                code = ?status.code(),
                message = status.message(),
                http_status = http_status.as_u16(),
                "webhook refused by svc-payment"
            ),
            _ => tracing::warn!(
                webhook_id,
                code = ?status.code(),
                message = status.message(),
                http_status = http_status.as_u16(),
                "webhook not stored by svc-payment; the provider sends it again"
            ),
        }
        answer(http_status, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_webhook_headers_and_the_content_type_are_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
        headers.insert("webhook-timestamp", HeaderValue::from_static("1700000000"));
        headers.insert("webhook-signature", HeaderValue::from_static("v1,abc"));
        headers.append("webhook-signature", HeaderValue::from_static("v1,def"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        headers.insert("x-webhook-id", HeaderValue::from_static("no"));
        headers.insert(header::COOKIE, HeaderValue::from_static("a=b"));
        headers.insert("webhook-junk", HeaderValue::from_bytes(b"\xff").expect("opaque bytes"));
        let forwarded = forwarded_headers(&headers);
        let expected: HashMap<String, String> = [
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", "1700000000"),
            ("webhook-signature", "v1,abc, v1,def"),
            ("content-type", "application/json"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(forwarded, expected);
    }

    #[test]
    fn statuses_map_to_what_a_provider_acts_on() {
        assert_eq!(http_status_of(Code::Ok), StatusCode::OK);
        assert_eq!(http_status_of(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status_of(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        for retried in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::Unimplemented,
            Code::PermissionDenied,
            Code::ResourceExhausted,
        ] {
            assert_eq!(http_status_of(retried), StatusCode::SERVICE_UNAVAILABLE, "{retried:?}");
        }
    }
}
