//! svc-cart's part of the checkout saga: an order from the cart holds the
//! units it took until it ends. `orders.confirmed` removes them from the
//! buyer's cart; `orders.cancelled` lets them go, so the cart is there for
//! another try (see [`CartStore::end_checkout`]).
//!
//! The effect is idempotent by itself (the checkout record turns into a
//! tombstone in the same script), so no inbox is needed: a redelivery or a
//! replay finds the tombstone, or no record, and changes nothing.

use shop_proto::events::v1 as ev;
use shop_runtime::{
    api_error::chain,
    consumer::{EventHandler, HandleError},
    event::{self, IncomingEvent},
    identity::UserId,
};

use crate::{
    carts::{CartStore, Ended, OrderEnd},
    error::is_redis,
};

pub const ORDERS_CONSUMER: &str = "cart-orders";

pub struct CartOrders {
    pub carts: CartStore,
}

impl EventHandler for CartOrders {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
        let (order_id, user_id, end) = if event.is::<ev::OrderConfirmed>() {
            let confirmed: ev::OrderConfirmed = event.decode()?;
            (confirmed.order_id, confirmed.user_id, OrderEnd::Confirmed)
        } else if event.is::<ev::OrderCancelled>() {
            let cancelled: ev::OrderCancelled = event.decode()?;
            (cancelled.order_id, cancelled.user_id, OrderEnd::Cancelled)
        } else {
            return Err(HandleError::unknown_type(&event));
        };
        let user = UserId::parse(&user_id).map_err(|why| HandleError::Reject(format!("user_id {user_id:?} {why}")))?;
        // The order id becomes part of a key: only what svc-order issues, in
        // the form svc-order answered Checkout with.
        let order_id = event::order_id(&order_id)?.to_string();
        let outcome = self.carts.end_checkout(&user, &order_id, end).await.map_err(|e| {
            if is_redis(&e) {
                HandleError::Retry(chain(&e))
            } else {
                HandleError::Reject(chain(&e))
            }
        })?;
        match outcome {
            Ended::Now => {
                if end == OrderEnd::Confirmed {
                    metrics::counter!(shop_runtime::series::CART_CHECKOUTS_CLEARED).increment(1);
                }
                tracing::info!(%order_id, user = %user, ?end, "checkout ended");
                Ok(())
            }
            Ended::Already | Ended::NotFromCart => Ok(()),
            Ended::CheckoutInFlight => Err(HandleError::Retry(format!(
                "a checkout of {user} awaits svc-order's reply; its record may not be written yet"
            ))),
        }
    }
}
