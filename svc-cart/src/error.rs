//! svc-cart's failures are [`ApiError`]s. Here: the name the generic answer
//! to an internal failure gives the carts, and the failures several modules
//! raise alike.

use shop_runtime::api_error::{self, ApiError, Resource};

/// What clients are told is away when something internal fails.
pub(crate) const CARTS: Resource = Resource::plural("carts");

/// What a checkout waits for when svc-order cannot tell whether an earlier
/// checkout of the cart, left unanswered, placed an order.
pub(crate) const EARLIER_CHECKOUT: Resource = Resource::singular("the outcome of an earlier checkout of this cart");

/// Stored data (or a script's answer) that makes no sense: internal.
pub(crate) fn corrupt(what: impl Into<String>) -> ApiError {
    ApiError::internal(CARTS, "stored cart is unreadable")(what.into())
}

pub(crate) fn catalog_unavailable() -> ApiError {
    ApiError::Unavailable(api_error::CATALOG)
}

pub(crate) fn orders_unavailable() -> ApiError {
    ApiError::Unavailable(api_error::ORDERS)
}

/// Redis was away: worth retrying, unlike a refusal or corrupt data.
pub(crate) fn is_redis(error: &ApiError) -> bool {
    matches!(error, ApiError::Internal { source, .. } if source.is::<redis::RedisError>())
}
