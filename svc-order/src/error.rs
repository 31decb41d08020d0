//! svc-order errors and their gRPC status.

use tonic::Status;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    KeyReused(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("the catalog is unavailable; try again shortly")]
    CatalogUnavailable,
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

impl From<shop_runtime::outbox::OutboxError> for Error {
    fn from(e: shop_runtime::outbox::OutboxError) -> Self {
        Self::Store(StoreError::Outbox(e))
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
            Error::NotFound(m) => Status::not_found(m),
            Error::KeyReused(m) => Status::already_exists(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::CatalogUnavailable => Status::unavailable(e.to_string()),
            Error::Store(inner) => {
                // Never echo internals to the caller; the log has them.
                tracing::error!(error = %inner, "order store error");
                Status::unavailable("orders are temporarily unavailable; try again shortly")
            }
        }
    }
}
