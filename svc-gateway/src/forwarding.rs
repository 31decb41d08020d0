//! Forwards one call to its upstream without decoding it: the request body
//! frames stream through (only message prefixes are watched, for the size
//! limit), and the response — headers, every message, trailers — streams
//! back, so server streaming works like unary. Unary requests are read
//! whole first, so one that never reached a replica can go to the next.

use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, Version, header};
use tonic::body::Body;
use tower::ServiceExt;

use http_body_util::{BodyExt, Full};
use shop_runtime::{
    breaker::{Outcome, Permit},
    upstream::{Endpoint, Upstream, never_reached},
};

use crate::{error::Error, message_limit::LimitedMessages};

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// How long the gateway waits, and for what.
#[derive(Debug, Clone, Copy)]
pub struct CallPlan {
    /// For unary calls, the whole call; for streams, until the upstream
    /// answers with headers (a stream may then run as long as it likes).
    pub deadline: Duration,
    /// Whether `deadline` is the gateway's own `REQUEST_TIMEOUT` (an expiry
    /// then counts against the upstream) rather than a client's shorter one.
    pub deadline_is_gateways: bool,
    pub streaming: bool,
    pub max_message_bytes: usize,
}

impl CallPlan {
    /// The plan for a call with the client's `grpc-timeout`, if any.
    pub fn new(
        client_timeout: Option<Duration>,
        request_timeout: Duration,
        streaming: bool,
        max_message_bytes: usize,
    ) -> Self {
        let (deadline, deadline_is_gateways) = match client_timeout {
            Some(client) if client < request_timeout && !streaming => (client, false),
            _ => (request_timeout, true),
        };
        Self {
            deadline,
            deadline_is_gateways,
            streaming,
            max_message_bytes,
        }
    }
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H M S m u n).
pub fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn format_grpc_timeout(timeout: Duration) -> HeaderValue {
    let millis = timeout.as_millis().max(1);
    let text = if millis < 100_000_000 {
        format!("{millis}m")
    } else {
        format!("{}S", timeout.as_secs().min(99_999_999))
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("1m"))
}

/// Connection-level headers of the client's hop that must not be forwarded.
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    header::CONTENT_LENGTH,
    header::HeaderName::from_static("keep-alive"),
];

fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Sends `request` to an endpoint of `upstream` under `plan`: the next
/// serving one in turn whose breaker admits the call. A unary request is
/// read whole first, so that when it never reached the endpoint tried
/// ([`never_reached`]: refused, or the replica was going away) it goes to
/// the next; streams go where they start.
pub async fn forward(upstream: &Upstream, request: Request<Body>, plan: CallPlan) -> Result<Response<Body>, Error> {
    let (mut parts, body) = request.into_parts();
    parts.version = Version::HTTP_2;
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    parts.headers.remove("proxy-connection");
    parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
    // The upstream's span is a child of the gateway's, not of the client's.
    shop_runtime::trace::Carrier::current().insert_into(&mut parts.headers);
    if !plan.streaming {
        // The upstream learns the deadline too, so it stops working on a call
        // nobody waits for any more.
        parts.headers.insert(GRPC_TIMEOUT, format_grpc_timeout(plan.deadline));
    }
    let (body, mut oversized) = LimitedMessages::new(body, plan.max_message_bytes);
    let started = Instant::now();

    let (whole, mut body) = if plan.streaming {
        (None, Some(Body::new(body)))
    } else {
        let whole = match tokio::time::timeout(plan.deadline, body.collect()).await {
            Err(_elapsed) => return Err(Error::DeadlineExceeded),
            Ok(Ok(whole)) => Some(whole.to_bytes()),
            Ok(Err(e)) => {
                return Err(match oversized.try_recv() {
                    Ok(_declared) => Error::MessageTooLarge {
                        limit: plan.max_message_bytes,
                    },
                    Err(_) => Error::RequestBody(e.message().to_owned()),
                });
            }
        };
        (whole, None)
    };
    let mut tried = 0;
    for endpoint in upstream.candidates() {
        let Some(permit) = endpoint.breaker.admit() else {
            continue;
        };
        tried += 1;
        let body = match &whole {
            Some(bytes) => Body::new(Full::new(bytes.clone())),
            None => match body.take() {
                Some(body) => body,
                None => break,
            },
        };
        let request = Request::from_parts(parts.clone(), body);
        match send(upstream, &endpoint, permit, request, &mut oversized, plan, started).await {
            Sent::NeverReached if whole.is_some() => continue,
            Sent::NeverReached => return Err(Error::UpstreamUnavailable),
            Sent::Answered(answer) => return answer,
        }
    }
    tracing::debug!(
        upstream = upstream.name,
        endpoints = upstream.endpoints().len(),
        tried,
        "no endpoint took the call (none known, every circuit open, or every one refused)"
    );
    Err(Error::UpstreamUnavailable)
}

enum Sent {
    Answered(Result<Response<Body>, Error>),
    /// The call did not reach the endpoint: nothing was done there.
    NeverReached,
}

/// Sends `request` to `endpoint` and judges the outcome for its breaker.
async fn send(
    upstream: &Upstream,
    endpoint: &Endpoint,
    permit: Permit<'_>,
    request: Request<Body>,
    oversized: &mut tokio::sync::oneshot::Receiver<usize>,
    plan: CallPlan,
    started: Instant,
) -> Sent {
    let call = endpoint.channel.clone().oneshot(request);
    let oversized = async {
        match oversized.await {
            Ok(declared) => declared,
            // The body finished (or was dropped) within the limit.
            Err(_) => std::future::pending().await,
        }
    };
    let remaining = plan.deadline.saturating_sub(started.elapsed());
    let answer = tokio::select! {
        biased;
        declared = oversized => {
            tracing::debug!(upstream = upstream.name, declared, "request message over the limit");
            permit.report(Outcome::Abandoned);
            return Sent::Answered(Err(Error::MessageTooLarge { limit: plan.max_message_bytes }));
        }
        answer = tokio::time::timeout(remaining, call) => answer,
    };
    metrics::histogram!(shop_runtime::series::GATEWAY_UPSTREAM_RESPONSE_SECONDS, "upstream" => upstream.name)
        .record(started.elapsed().as_secs_f64());
    // Expired deadlines count against the upstream only when they were the
    // gateway's own: a client in a hurry says nothing about its health. The
    // channel enforces the `grpc-timeout` sent upstream, which for streams is
    // the client's.
    let expired = match &answer {
        Err(_elapsed) => Some(plan.deadline_is_gateways),
        Ok(Err(e)) if is_timeout(e) => Some(plan.deadline_is_gateways && !plan.streaming),
        _ => None,
    };
    if let Some(gateways_deadline) = expired {
        permit.report(if gateways_deadline {
            Outcome::Failure
        } else {
            Outcome::Abandoned
        });
        return Sent::Answered(Err(Error::DeadlineExceeded));
    }
    match answer {
        Err(_elapsed) => Sent::Answered(Err(Error::DeadlineExceeded)),
        Ok(Err(e)) => {
            permit.report(Outcome::Failure);
            if never_reached(&e) {
                tracing::debug!(upstream = upstream.name, endpoint = %endpoint.addr, error = %e, "the call never reached this endpoint");
                return Sent::NeverReached;
            }
            tracing::warn!(upstream = upstream.name, endpoint = %endpoint.addr, error = %e, "upstream unreachable");
            Sent::Answered(Err(Error::UpstreamUnavailable))
        }
        Ok(Ok(response)) => {
            // Whatever it says, an upstream that answers is up. Its
            // UNAVAILABLE is usually about its own dependencies (svc-order
            // while the catalog is away), and counting it would open this
            // breaker for the calls it can still serve.
            permit.report(Outcome::Success);
            Sent::Answered(Ok(response))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_format() {
        let parse = |s: &'static str| parse_grpc_timeout(&HeaderValue::from_static(s));
        assert_eq!(parse("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse("123456789m"), None, "at most 8 digits");
        assert_eq!(parse("m"), None);
        assert_eq!(parse("10x"), None);
        assert_eq!(format_grpc_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(format_grpc_timeout(Duration::from_micros(10)), "1m");
    }

    #[test]
    fn the_shorter_deadline_wins_except_for_streams() {
        let ten = Duration::from_secs(10);
        let plan = CallPlan::new(Some(Duration::from_secs(1)), ten, false, 1);
        assert_eq!(
            (plan.deadline, plan.deadline_is_gateways),
            (Duration::from_secs(1), false)
        );
        let plan = CallPlan::new(Some(Duration::from_secs(60)), ten, false, 1);
        assert_eq!((plan.deadline, plan.deadline_is_gateways), (ten, true));
        let plan = CallPlan::new(Some(Duration::from_secs(1)), ten, true, 1);
        assert_eq!(plan.deadline, ten, "streams: only the wait for headers is bounded");
    }
}
