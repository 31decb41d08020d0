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
use tonic::{Code, Request, Response, Status, metadata::MetadataMap};

use crate::{
    carts::{Begun, Cart, CartStore, CheckoutLine, OrderEnd, OrderState, Unanswered},
    catalog,
    error::{EARLIER_CHECKOUT, orders_unavailable},
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
        let lines = self.begin_checkout(request.metadata(), user, key).await?;
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
        let order = match self.orders.place(request.metadata(), place).await {
            Ok(order) => order,
            Err(status) => {
                // No replica took it, or svc-order refused it: no order of
                // ours exists under the key. After anything else (a timeout,
                // "being created; retry") one may.
                let refused = upstream::was_unsent(&status)
                    || matches!(
                        status.code(),
                        Code::InvalidArgument | Code::AlreadyExists | Code::PermissionDenied | Code::Unauthenticated
                    );
                let known = if refused {
                    Unanswered::NoOrder
                } else {
                    Unanswered::MaybePlaced
                };
                self.carts.abandon_checkout(user, key, known).await?;
                return Err(order_failure(status));
            }
        };
        self.carts
            .record_checkout(user, key, &order.order_id, &lines, state_of(&order))
            .await?;
        tracing::info!(order_id = %order.order_id, user = %user, "checked out");
        Ok(order)
    }

    /// The lines to order under `key`. The fate of every earlier checkout
    /// whose PlaceOrder went unanswered is learnt first, so that the lines
    /// an order of it took are not ordered again.
    async fn begin_checkout(
        &self,
        caller: &MetadataMap,
        user: &UserId,
        key: &str,
    ) -> Result<Vec<CheckoutLine>, ApiError> {
        // Each round settles one unsure key; a cart has a handful at most.
        for _ in 0..MAX_UNSURE_SETTLED {
            let earlier = match self.carts.begin_checkout(user, key).await? {
                Begun::Lines(lines) => return Ok(lines),
                Begun::Unsure(earlier) => earlier,
            };
            match self.orders.lookup(caller, &earlier).await {
                Ok(Some(order)) => {
                    let took: Vec<CheckoutLine> = order.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
                    self.carts
                        .record_checkout(user, &earlier, &order.order_id, &took, state_of(&order))
                        .await?;
                    tracing::info!(order_id = %order.order_id, user = %user, "an unanswered checkout found its order");
                }
                Ok(None) => self.carts.forget_unsure(user, &earlier).await?,
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "LookupOrder failed");
                    return Err(ApiError::Unavailable(EARLIER_CHECKOUT));
                }
            }
        }
        Err(ApiError::Unavailable(EARLIER_CHECKOUT))
    }
}

/// Unsure keys settled in one checkout before it gives up.
const MAX_UNSURE_SETTLED: usize = 8;

/// Whether `order` is still under way, as the cart's record needs it.
fn state_of(order: &Order) -> OrderState {
    match OrderStatus::try_from(order.status) {
        Ok(OrderStatus::Confirmed) => OrderState::Ended(OrderEnd::Confirmed),
        Ok(OrderStatus::Cancelled) => OrderState::Ended(OrderEnd::Cancelled),
        _ => OrderState::Open,
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
