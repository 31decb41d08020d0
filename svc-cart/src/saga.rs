//! svc-cart's part of the checkout saga: `orders.confirmed` removes from the
//! buyer's cart what the order took (see [`CartStore::clear_checked_out`]).
//! A cancelled order sends no confirmation, so its cart stays for another
//! try.
//!
//! The effect is idempotent by itself (the checkout record turns into a
//! tombstone in the same script), so no inbox is needed: a redelivery or a
//! replay finds the tombstone, or no record, and changes nothing.

use shop_proto::events::v1 as ev;
use shop_runtime::{
    api_error::chain,
    consumer::{EventHandler, HandleError},
    event::IncomingEvent,
    identity::UserId,
};

use crate::{
    carts::{CartStore, Cleared},
    error::is_redis,
};

pub const ORDERS_CONSUMER: &str = "cart-orders";

pub struct CartOrders {
    pub carts: CartStore,
}

impl EventHandler for CartOrders {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
        if !event.is::<ev::OrderConfirmed>() {
            return Err(HandleError::unknown_type(&event));
        }
        let confirmed: ev::OrderConfirmed = event.decode()?;
        let user = UserId::parse(&confirmed.user_id)
            .map_err(|why| HandleError::Reject(format!("user_id {:?} {why}", confirmed.user_id)))?;
        // The order id becomes part of a key: only what svc-order issues (a UUID).
        if confirmed.order_id.is_empty()
            || confirmed.order_id.len() > 64
            || !confirmed.order_id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        {
            return Err(HandleError::Reject(format!(
                "order_id {:?} is not an order id",
                confirmed.order_id
            )));
        }
        let outcome = self
            .carts
            .clear_checked_out(&user, &confirmed.order_id)
            .await
            .map_err(|e| {
                if is_redis(&e) {
                    HandleError::Retry(chain(&e))
                } else {
                    HandleError::Reject(chain(&e))
                }
            })?;
        match outcome {
            Cleared::Now => {
                metrics::counter!(shop_runtime::series::CART_CHECKOUTS_CLEARED).increment(1);
                tracing::info!(order_id = %confirmed.order_id, user = %user, "checked-out lines removed from the cart");
                Ok(())
            }
            Cleared::Already | Cleared::NotFromCart => Ok(()),
            Cleared::CheckoutInFlight => Err(HandleError::Retry(format!(
                "a checkout of {user} awaits svc-order's reply; its record may not be written yet"
            ))),
        }
    }
}
