//! svc-notify errors and their gRPC status.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
            Error::Database(inner) => {
                // Never echo internals to the caller; the log has them.
                tracing::error!(error = %inner, "database error");
                Status::unavailable("notifications are temporarily unavailable; try again shortly")
            }
        }
    }
}
