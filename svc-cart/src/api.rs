//! gRPC adapter: `shop.cart.v1.CartService`. Proto types stop here.
//!
//! Every call works on the caller's own cart (the user the gateway vouches
//! for); there is no way to name another user's cart, for admins either.

use shop_catalog::Catalog;
use shop_proto::{
    cart::v1 as pb,
    order::v1::{Order, OrderLine, OrderStatus, PlaceOrderRequest},
};
use shop_runtime::{
    api_error::ApiError,
    identity::{Caller, UserId},
    upstream,
    values::{IdempotencyKey, Quantity, Sku, timestamp},
};
use tonic::{Code, Request, Response, Status};

use crate::{
    carts::{Cart, CartStore, OrderEnd},
    catalog,
    error::orders_unavailable,
    orders::Orders,
};

pub(crate) struct CartApi {
    pub carts: CartStore,
    pub catalog: Catalog,
    pub orders: Orders,
}

fn to_proto(cart: Cart) -> Result<pb::Cart, ApiError> {
    let total = cart.total()?;
    Ok(pb::Cart {
        lines: cart
            .lines
            .into_iter()
            .map(|line| pb::CartLine {
                sku: line.sku,
                name: line.name,
                quantity: line.quantity,
                unit_price: Some(line.unit_price.to_proto()),
            })
            .collect(),
        total: total.map(|t| t.to_proto()),
        expires_at: cart.expires_at.map(timestamp),
    })
}

fn parse_sku(raw: &str) -> Result<Sku, ApiError> {
    Sku::parse(raw).map_err(|why| ApiError::invalid("sku", why))
}

impl CartApi {
    /// A line's units: at least 1 and at most the per-line limit.
    fn parse_quantity(&self, raw: i32) -> Result<Quantity, ApiError> {
        let max = self.carts.limits().max_quantity;
        if !(1..=max).contains(&raw) {
            return Err(ApiError::invalid(
                "quantity",
                format!("must be between 1 and {max}, got {raw}"),
            ));
        }
        Quantity::new(raw).map_err(|why| ApiError::invalid("quantity", why))
    }

    async fn checkout(&self, caller: &Caller, request: Request<pb::CheckoutRequest>) -> Result<Order, ApiError> {
        let body = request.get_ref();
        let key =
            IdempotencyKey::parse(&body.idempotency_key).map_err(|why| ApiError::invalid("idempotency_key", why))?;
        let key = key.as_str();
        if body.payment_method.is_empty() {
            return Err(ApiError::invalid("payment_method", "is required (e.g. \"pm_card_ok\")"));
        }
        let user = &caller.user_id;
        let lines = self.carts.begin_checkout(user, key).await?;
        let place = PlaceOrderRequest {
            idempotency_key: key.to_owned(),
            lines: lines
                .iter()
                .map(|(sku, quantity)| OrderLine {
                    sku: sku.clone(),
                    quantity: *quantity,
                    unit_price: None,
                })
                .collect(),
            payment_method: body.payment_method.clone(),
        };
        let answer = self.orders.place(request.metadata(), place).await;
        let order = match answer {
            Ok(order) => order,
            // No replica took it: nothing was placed, and a retry may read
            // the cart afresh.
            Err(status) if upstream::was_unsent(&status) => {
                self.carts.abandon_checkout(user, key, true).await?;
                return Err(orders_unavailable());
            }
            Err(status) => {
                // These refusals mean no order of ours exists under the key,
                // so a retry may read the cart afresh. After anything else
                // (a timeout, "being created; retry") one may exist, so the
                // key stays pinned to the lines already sent.
                let refused = matches!(
                    status.code(),
                    Code::InvalidArgument | Code::AlreadyExists | Code::PermissionDenied | Code::Unauthenticated
                );
                self.carts.abandon_checkout(user, key, refused).await?;
                return Err(order_failure(status));
            }
        };
        self.carts.record_checkout(user, key, &order.order_id, &lines).await?;
        // A retry of a checkout whose order is already confirmed: its
        // confirmation may have come before the record existed.
        if order.status == OrderStatus::Confirmed as i32 {
            self.carts
                .end_checkout(user, &order.order_id, OrderEnd::Confirmed)
                .await?;
        }
        tracing::info!(order_id = %order.order_id, user = %user, "checked out");
        Ok(order)
    }
}

/// svc-order's refusals are passed on as they are (their messages are
/// written for clients); failures of the call itself become UNAVAILABLE.
fn order_failure(status: Status) -> ApiError {
    match status.code() {
        Code::InvalidArgument
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::OutOfRange
        | Code::ResourceExhausted => ApiError::Relayed(status),
        // svc-order's own UNAVAILABLE (its catalog is down) carries its
        // message; one made here from a transport error has a source and a
        // message about sockets that the client has no use for.
        Code::Unavailable if std::error::Error::source(&status).is_none() => ApiError::Relayed(status),
        code => {
            tracing::warn!(?code, message = status.message(), "PlaceOrder failed");
            orders_unavailable()
        }
    }
}

fn caller_of<T>(request: &Request<T>) -> Result<Caller, Status> {
    Caller::of(request)
}

fn user_of<T>(request: &Request<T>) -> Result<UserId, Status> {
    caller_of(request).map(|c| c.user_id)
}

#[tonic::async_trait]
impl pb::cart_service_server::CartService for CartApi {
    async fn get_cart(&self, request: Request<pb::GetCartRequest>) -> Result<Response<pb::Cart>, Status> {
        let user = user_of(&request)?;
        let cart = self.carts.get(&user).await?;
        Ok(Response::new(to_proto(cart)?))
    }

    async fn add_item(&self, request: Request<pb::AddItemRequest>) -> Result<Response<pb::Cart>, Status> {
        let user = user_of(&request)?;
        let body = request.get_ref();
        let sku = parse_sku(&body.sku)?;
        let quantity = self.parse_quantity(body.quantity)?;
        let product = catalog::product(&self.catalog, &sku).await?;
        let cart = self.carts.add(&user, &sku, quantity, &product).await?;
        Ok(Response::new(to_proto(cart)?))
    }

    async fn update_item(&self, request: Request<pb::UpdateItemRequest>) -> Result<Response<pb::Cart>, Status> {
        let user = user_of(&request)?;
        let body = request.get_ref();
        let sku = parse_sku(&body.sku)?;
        let quantity = self.parse_quantity(body.quantity).map_err(|e| match e {
            ApiError::InvalidArgument { field, reason } if body.quantity == 0 => ApiError::InvalidArgument {
                field,
                reason: format!("{reason}; use RemoveItem to take a line out"),
            },
            other => other,
        })?;
        let cart = self.carts.update(&user, &sku, quantity).await?;
        Ok(Response::new(to_proto(cart)?))
    }

    async fn remove_item(&self, request: Request<pb::RemoveItemRequest>) -> Result<Response<pb::Cart>, Status> {
        let user = user_of(&request)?;
        let sku = parse_sku(&request.get_ref().sku)?;
        let cart = self.carts.remove(&user, &sku).await?;
        Ok(Response::new(to_proto(cart)?))
    }

    async fn clear_cart(&self, request: Request<pb::ClearCartRequest>) -> Result<Response<pb::Cart>, Status> {
        let user = user_of(&request)?;
        let cart = self.carts.clear(&user).await?;
        Ok(Response::new(to_proto(cart)?))
    }

    async fn checkout(&self, request: Request<pb::CheckoutRequest>) -> Result<Response<Order>, Status> {
        let caller = caller_of(&request)?;
        let order = CartApi::checkout(self, &caller, request).await?;
        Ok(Response::new(order))
    }
}
