//! svc-cart errors and their gRPC status.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("catalog unavailable, try later")]
    CatalogUnavailable,
    #[error("orders unavailable, try later")]
    OrdersUnavailable,
    /// svc-order's own answer, passed on as it came: its messages are
    /// written for clients.
    #[error("svc-order: {}", .0.message())]
    Order(Status),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored cart is unreadable: {0}")]
    Corrupt(String),
}

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
            Error::NotFound(m) => Status::not_found(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::CatalogUnavailable | Error::OrdersUnavailable => Status::unavailable(e.to_string()),
            Error::Order(status) => Status::new(status.code(), status.message()),
            Error::Redis(_) | Error::Corrupt(_) => {
                // Never echo internals to the caller; the log has them.
                tracing::error!(error = %e, "cart store error");
                Status::unavailable("carts are temporarily unavailable; try again shortly")
            }
        }
    }
}
