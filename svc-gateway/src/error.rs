//! What the gateway itself answers, and the one mapping to gRPC status.

use std::time::Duration;

use shop_runtime::series;
use tonic::{Status, body::Body, metadata::MetadataValue};

use crate::authentication::Rejection;

/// Metadata keys of the retry hint on `RESOURCE_EXHAUSTED`: one readable by
/// any client, and the one gRPC's own retry machinery honours.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// Said on every fail-fast answer for an upstream that is down; the details
/// go to the log, not to the caller.
pub const SYSTEM_BUSY: &str = "system busy, try later";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown method {0}")]
    UnknownMethod(String),
    /// Not a gRPC request (wrong method or content-type).
    #[error("{0}")]
    NotGrpc(&'static str),
    #[error("{0}")]
    MissingCredentials(&'static str),
    #[error("{0}")]
    BadToken(#[from] Rejection),
    #[error("{0}")]
    PermissionDenied(&'static str),
    #[error("rate limit exceeded; retry in {} ms", retry_after.as_millis())]
    RateLimited { limit: &'static str, retry_after: Duration },
    #[error("request message larger than {limit} bytes")]
    MessageTooLarge { limit: usize },
    /// The upstream is down or its circuit breaker is open.
    #[error("{SYSTEM_BUSY}")]
    UpstreamUnavailable,
    #[error("deadline exceeded before the service answered")]
    DeadlineExceeded,
    /// The client's request body failed before it ended (it went away).
    #[error("the request ended early: {0}")]
    RequestBody(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::UnknownMethod(_) => Status::unimplemented(e.to_string()),
            Error::NotGrpc(_) => Status::invalid_argument(e.to_string()),
            Error::MissingCredentials(_) | Error::BadToken(_) => Status::unauthenticated(e.to_string()),
            Error::PermissionDenied(_) => Status::permission_denied(e.to_string()),
            Error::RateLimited { retry_after, .. } => {
                // Round up: a client that waits exactly this long must pass.
                let millis = retry_after.as_micros().div_ceil(1000).max(1);
                let mut status = Status::resource_exhausted(format!("rate limit exceeded; retry in {millis} ms"));
                if let Ok(value) = MetadataValue::try_from(millis.to_string()) {
                    status.metadata_mut().insert(RETRY_AFTER_MS, value.clone());
                    status.metadata_mut().insert(GRPC_RETRY_PUSHBACK_MS, value);
                }
                status
            }
            Error::MessageTooLarge { .. } => Status::resource_exhausted(e.to_string()),
            Error::UpstreamUnavailable => Status::unavailable(SYSTEM_BUSY),
            Error::DeadlineExceeded => Status::deadline_exceeded(e.to_string()),
            Error::RequestBody(_) => Status::cancelled(e.to_string()),
            Error::Internal(inner) => {
                // Never echo internals to the caller; the log has them.
                tracing::error!(error = %inner, "gateway internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("development signing key: {0}")]
    DevKey(#[from] crate::dev_tokens::DevKeyError),
    #[error("token signing keys: {0}")]
    SigningKeys(#[from] crate::authentication::KeySetError),
    #[error("access policy from the contract: {0}")]
    AccessPolicy(#[from] crate::access::AccessTableError),
    #[error("upstream address: {0}")]
    Upstream(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("storefront security policy: {0}")]
    StorefrontPolicy(#[from] http::header::InvalidHeaderValue),
    #[error(transparent)]
    Host(#[from] shop_runtime::host::HostError),
}

impl Error {
    pub fn rate_limited(refused: crate::rate_limits::Refused) -> Self {
        Self::RateLimited {
            limit: refused.limit,
            retry_after: refused.retry_after,
        }
    }

    /// Counts a refusal an operator watches for: credentials refused
    /// ([`series::GATEWAY_AUTH_FAILURES`]) or a rate limit hit
    /// ([`series::GATEWAY_RATE_LIMITED`]).
    pub fn count(&self) {
        let reason = match self {
            Error::RateLimited { limit, .. } => {
                metrics::counter!(series::GATEWAY_RATE_LIMITED, "limit" => *limit).increment(1);
                return;
            }
            Error::MissingCredentials(_) => "missing",
            Error::BadToken(Rejection::Expired) => "expired",
            Error::BadToken(Rejection::NotYetValid) => "not_yet_valid",
            Error::BadToken(Rejection::WrongAudience) => "wrong_audience",
            Error::BadToken(Rejection::WrongIssuer) => "wrong_issuer",
            Error::BadToken(Rejection::Invalid(_)) => "invalid",
            _ => return,
        };
        metrics::counter!(series::GATEWAY_AUTH_FAILURES, "reason" => reason).increment(1);
    }

    /// A complete trailers-only gRPC response for this error.
    pub fn into_response(self) -> http::Response<Body> {
        // gRPC asks for 415 on a wrong content-type so that plain HTTP clients
        // do not read the 200 of a gRPC error as success.
        let not_grpc = matches!(self, Error::NotGrpc(_));
        let mut response = Status::from(self).into_http::<Body>();
        if not_grpc {
            *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_carries_the_retry_hint_rounded_up() {
        let status = Status::from(Error::RateLimited {
            limit: "user",
            retry_after: Duration::from_micros(1500),
        });
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let hint = status
            .metadata()
            .get(RETRY_AFTER_MS)
            .expect("hint")
            .to_str()
            .expect("ascii");
        assert_eq!(hint, "2");
        assert!(status.metadata().get(GRPC_RETRY_PUSHBACK_MS).is_some());
    }

    #[test]
    fn internal_errors_are_not_echoed() {
        let status = Status::from(Error::Internal("db password is hunter2".into()));
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn upstream_trouble_is_system_busy() {
        let response = Error::UpstreamUnavailable.into_response();
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()["grpc-message"], "system%20busy,%20try%20later");
    }
}
