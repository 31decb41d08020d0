//! The one mapping from what went wrong in a request to its gRPC status.
//!
//! Every service answers with an [`ApiError`]. A refusal the caller can act
//! on goes to the client with its message as written. An
//! [`ApiError::Internal`] failure (database, Redis, outbox, corrupt data) is
//! logged with its whole source chain and what was being done, and answered
//! with a generic `UNAVAILABLE` that names only the service's [`Resource`]:
//! internals are never echoed.
//!
//! ```
//! use shop_runtime::api_error::{ApiError, Resource};
//!
//! const CARTS: Resource = Resource::plural("carts");
//!
//! fn load() -> Result<(), std::io::Error> {
//!     Err(std::io::Error::other("connection refused"))
//! }
//!
//! let error = load().map_err(ApiError::internal(CARTS, "loading the cart")).unwrap_err();
//! let status = tonic::Status::from(error);
//! assert_eq!(status.message(), "carts are temporarily unavailable; try again shortly");
//! ```

use std::{borrow::Cow, error::Error};

use tonic::Status;

/// The cause of an internal failure.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// What a service's clients call its data, for the generic answer to an
/// internal failure: "orders are temporarily unavailable; try again shortly".
/// The resources of other services a request depends on are here too, so
/// that every caller names them alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    name: &'static str,
    verb: &'static str,
}

/// svc-inventory's catalog, as svc-order and svc-cart name it when it is away.
pub const CATALOG: Resource = Resource::singular("the catalog");

/// svc-order's orders, as svc-cart names them when svc-order is away.
pub const ORDERS: Resource = Resource::plural("orders");

impl Resource {
    /// A name that takes "are": `Resource::plural("orders")`.
    pub const fn plural(name: &'static str) -> Self {
        Self { name, verb: "are" }
    }

    /// A name that takes "is": `Resource::singular("inventory")`.
    pub const fn singular(name: &'static str) -> Self {
        Self { name, verb: "is" }
    }

    /// The message of the `UNAVAILABLE` answered for an internal failure.
    pub fn unavailable_message(self) -> String {
        format!("{} {} temporarily unavailable; try again shortly", self.name, self.verb)
    }
}

/// Why a request failed, as its caller is told.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `INVALID_ARGUMENT` naming the field: `lines[1].quantity: must be positive, got 0`.
    #[error("{field}: {reason}")]
    InvalidArgument { field: Cow<'static, str>, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// A dependency the caller may be told about is away (the catalog):
    /// `UNAVAILABLE` naming it, in the words of an internal failure.
    #[error("{}", .0.unavailable_message())]
    Unavailable(Resource),
    /// Another service's answer, passed on with its code and message (its
    /// messages are written for clients).
    #[error("{}", .0.message())]
    Relayed(Status),
    /// Anything internal: logged with `context` and the whole source chain,
    /// answered with [`Resource::unavailable_message`].
    #[error("{context}")]
    Internal {
        resource: Resource,
        /// What was being done, e.g. "loading the order".
        context: &'static str,
        source: BoxError,
    },
}

impl ApiError {
    pub fn invalid(field: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// For `map_err`: `.map_err(ApiError::internal(ORDERS, "loading the order"))`.
    /// Takes any error, or a `String` describing corrupt data.
    pub fn internal<E: Into<BoxError>>(resource: Resource, context: &'static str) -> impl FnOnce(E) -> Self {
        move |source| Self::Internal {
            resource,
            context,
            source: source.into(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            ApiError::NotFound(message) => Status::not_found(message),
            ApiError::AlreadyExists(message) => Status::already_exists(message),
            ApiError::FailedPrecondition(message) => Status::failed_precondition(message),
            ApiError::PermissionDenied(message) => Status::permission_denied(message),
            ApiError::Unavailable(resource) => Status::unavailable(resource.unavailable_message()),
            ApiError::Relayed(status) => Status::new(status.code(), status.message()),
            ApiError::Internal { resource, .. } => {
                // Never echo internals to the caller; the log has them.
                tracing::error!(
                    resource = resource.name,
                    error = %chain(&error),
                    "internal failure answered UNAVAILABLE"
                );
                Status::unavailable(resource.unavailable_message())
            }
        }
    }
}

/// `error` and every `source()` beneath it, joined with ": ", so the log
/// shows which call failed on what. A source whose text its parent already
/// ends with (many errors print their source) is not repeated.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let message = cause.to_string();
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused by 10.0.0.7:5432")]
    struct Refused;

    #[derive(Debug, thiserror::Error)]
    #[error("SELECT FROM orders")]
    struct Query(#[source] Refused);

    /// Prints its source, as sqlx's and many other errors do.
    #[derive(Debug, thiserror::Error)]
    #[error("database: {0}")]
    struct Database(#[from] Query);

    #[test]
    fn every_variant_has_its_code_and_refusals_keep_their_message() {
        let cases = [
            (
                ApiError::invalid("lines[1].quantity", "must be positive, got 0"),
                Code::InvalidArgument,
            ),
            (ApiError::NotFound("no order 42".into()), Code::NotFound),
            (ApiError::AlreadyExists("key reused".into()), Code::AlreadyExists),
            (
                ApiError::FailedPrecondition("cart is empty".into()),
                Code::FailedPrecondition,
            ),
            (ApiError::PermissionDenied("admins only".into()), Code::PermissionDenied),
            (ApiError::Unavailable(CATALOG), Code::Unavailable),
            (
                ApiError::Relayed(Status::out_of_range("from upstream")),
                Code::OutOfRange,
            ),
            (
                ApiError::internal(ORDERS, "loading the order")(Refused),
                Code::Unavailable,
            ),
        ];
        let messages: Vec<String> = cases
            .into_iter()
            .map(|(error, code)| {
                let status = Status::from(error);
                assert_eq!(status.code(), code, "{status:?}");
                status.message().to_owned()
            })
            .collect();
        assert_eq!(
            messages,
            [
                "lines[1].quantity: must be positive, got 0",
                "no order 42",
                "key reused",
                "cart is empty",
                "admins only",
                "the catalog is temporarily unavailable; try again shortly",
                "from upstream",
                "orders are temporarily unavailable; try again shortly",
            ]
        );
    }

    #[test]
    fn an_internal_failure_is_answered_generically_and_never_echoed() {
        let error = ApiError::internal(ORDERS, "loading the order")(Database::from(Query(Refused)));
        let status = Status::from(error);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "orders are temporarily unavailable; try again shortly"
        );
        for secret in ["10.0.0.7", "SELECT", "database", "loading"] {
            assert!(!status.message().contains(secret), "{secret} echoed: {status:?}");
        }
        assert!(std::error::Error::source(&status).is_none(), "{status:?}");

        let corrupt = ApiError::internal(Resource::singular("inventory"), "reading stock")("on_hand is -1".to_owned());
        assert_eq!(
            Status::from(corrupt).message(),
            "inventory is temporarily unavailable; try again shortly"
        );
    }

    #[test]
    fn the_logged_chain_names_what_was_done_and_every_nested_source_once() {
        let error = ApiError::internal(ORDERS, "loading the order")(Query(Refused));
        assert_eq!(
            chain(&error),
            "loading the order: SELECT FROM orders: connection refused by 10.0.0.7:5432"
        );
        let printed_source = ApiError::internal(ORDERS, "loading the order")(Database::from(Query(Refused)));
        assert_eq!(
            chain(&printed_source),
            "loading the order: database: SELECT FROM orders: connection refused by 10.0.0.7:5432"
        );
        assert_eq!(chain(&Refused), "connection refused by 10.0.0.7:5432");
    }
}
