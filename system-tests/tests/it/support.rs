//! What the system tests share: placing and reading orders as a customer,
//! and reading what the services stored or published.

use async_nats::jetstream::{Context, message::StreamMessage};
use shop_harness::{AsUser, Service, Stack, StackOptions};
use shop_proto::{
    notify::v1::{ListNotificationsRequest, Notification, notification_service_client::NotificationServiceClient},
    order::v1::{
        CancelOrderRequest, CancelReason, GetOrderRequest, Order, OrderLine, OrderStatus, PlaceOrderRequest,
        order_service_client::OrderServiceClient,
    },
    payment::v1::{GetPaymentRequest, Payment},
};
use tonic::{Status, service::interceptor::InterceptedService, transport::Channel};

pub(crate) type TestResult = anyhow::Result<()>;
pub(crate) type OrderClient = OrderServiceClient<InterceptedService<Channel, AsUser>>;
pub(crate) type NotifyClient = NotificationServiceClient<InterceptedService<Channel, AsUser>>;

pub(crate) fn request(key: &str, lines: Vec<OrderLine>, payment_method: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        idempotency_key: key.into(),
        lines,
        payment_method: payment_method.into(),
    }
}

/// A stack whose payment service is not running yet, so orders stop at
/// RESERVED until a test starts it.
pub(crate) fn without_payment() -> StackOptions {
    StackOptions {
        held_back: vec![Service::Payment],
        ..Default::default()
    }
}

/// PlaceOrder's answer (PENDING: the saga has only begun), or its refusal.
pub(crate) async fn place_with(
    orders: &mut OrderClient,
    key: &str,
    lines: Vec<OrderLine>,
    pm: &str,
) -> Result<Order, Status> {
    orders
        .place_order(request(key, lines, pm))
        .await
        .map(tonic::Response::into_inner)
}

/// PlaceOrder on the stack's svc-order, as the customer `user`.
pub(crate) trait PlaceOrders {
    /// PlaceOrder's answer (PENDING: the saga has only begun).
    async fn place(&self, user: &str, key: &str, lines: Vec<OrderLine>, pm: &str) -> anyhow::Result<Order>;

    /// Places an order and waits until the saga has settled it (CONFIRMED
    /// or CANCELLED).
    async fn place_settled(&self, user: &str, key: &str, lines: Vec<OrderLine>, pm: &str) -> anyhow::Result<Order>;
}

impl PlaceOrders for Stack {
    async fn place(&self, user: &str, key: &str, lines: Vec<OrderLine>, pm: &str) -> anyhow::Result<Order> {
        Ok(place_with(&mut self.orders(user).await?, key, lines, pm).await?)
    }

    async fn place_settled(&self, user: &str, key: &str, lines: Vec<OrderLine>, pm: &str) -> anyhow::Result<Order> {
        let order = self.place(user, key, lines, pm).await?;
        self.settled(user, &order.order_id).await
    }
}

pub(crate) async fn get_order(orders: &mut OrderClient, order_id: &str) -> Result<Order, Status> {
    let order_id = order_id.into();
    Ok(orders.get_order(GetOrderRequest { order_id }).await?.into_inner())
}

pub(crate) async fn cancel(orders: &mut OrderClient, order_id: &str) -> Result<Order, Status> {
    let order_id = order_id.into();
    Ok(orders.cancel_order(CancelOrderRequest { order_id }).await?.into_inner())
}

#[track_caller]
pub(crate) fn assert_cancelled(order: &Order, reason: CancelReason) {
    assert_eq!(order.status, OrderStatus::Cancelled as i32);
    assert_eq!(order.cancel_reason, reason as i32);
}

/// The order's payment, as its customer sees it.
pub(crate) async fn payment(stack: &Stack, user: &str, order_id: &str) -> anyhow::Result<Payment> {
    Ok(stack
        .payments(user)
        .await?
        .get_payment(GetPaymentRequest {
            order_id: order_id.into(),
        })
        .await?
        .into_inner())
}

/// The customer's notifications about one order (all of them for an empty id).
pub(crate) async fn notifications(notify: &NotifyClient, order_id: &str) -> anyhow::Result<Vec<Notification>> {
    let mut notify = notify.clone();
    Ok(notify
        .list_notifications(ListNotificationsRequest {
            order_id: order_id.into(),
        })
        .await?
        .into_inner()
        .notifications)
}

pub(crate) async fn count(pool: &sqlx::PgPool, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

/// The events one confirmed checkout publishes, in the saga's order, as
/// `(stream, subject)`.
pub(crate) fn checkout_events(order_id: &str) -> [(&'static str, String); 5] {
    [
        ("ORDERS", format!("orders.placed.{order_id}")),
        ("INVENTORY", format!("inventory.reserved.{order_id}")),
        ("PAYMENTS", format!("payments.succeeded.{order_id}")),
        ("INVENTORY", format!("inventory.committed.{order_id}")),
        ("ORDERS", format!("orders.confirmed.{order_id}")),
    ]
}

/// The last message the broker stored on `subject`.
pub(crate) async fn last_stored(js: &Context, stream: &str, subject: &str) -> anyhow::Result<StreamMessage> {
    Ok(js
        .get_stream(stream)
        .await?
        .get_last_raw_message_by_subject(subject)
        .await?)
}

/// A header of a stored message; empty when it has none.
pub(crate) fn header(stored: &StreamMessage, name: &str) -> String {
    stored
        .headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}
