//! Only the gateway vouches for callers: a service called directly believes
//! no identity metadata, no token signed with another key and no token made
//! for another method.

use shop_harness::{AsUser, Service, Stack, StackOptions};
use shop_proto::{
    cart::v1::{GetCartRequest, cart_service_client::CartServiceClient},
    inventory::v1::{GetStockRequest, inventory_service_client::InventoryServiceClient},
    notify::v1::{ListNotificationsRequest, notification_service_client::NotificationServiceClient},
    order::v1::{ListOrdersRequest, order_service_client::OrderServiceClient},
    payment::v1::{GetPaymentRequest, payment_service_client::PaymentServiceClient},
};
use shop_runtime::identity::{self, IDENTITY_HEADER, IdentityIssuer, UserId};
use tonic::{Code, Request, Status};

const LIST_ORDERS: &str = "/shop.order.v1.OrderService/ListOrders";

/// `message` with metadata that used to make a caller, before services
/// checked who vouches for it.
fn claiming_to_be_an_admin<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-user-id", "alice".parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("x-user-roles", "admin".parse().expect("ascii"));
    request
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(IDENTITY_HEADER, token.parse().expect("a token is ascii"));
    request
}

fn assert_refused<T: std::fmt::Debug>(answer: Result<T, Status>, what: &str, says: &str) {
    let status = answer.expect_err(what);
    assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    assert!(status.message().contains(says), "{what}: {:?}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_direct_call_with_a_forged_identity_is_unauthenticated() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().with(Service::Cart)).await?;
    let nobody = "call through the gateway";

    // Identity metadata means nothing to any service.
    let mut orders = OrderServiceClient::new(stack.channel(Service::Order).await?);
    let answer = orders
        .list_orders(claiming_to_be_an_admin(ListOrdersRequest::default()))
        .await;
    assert_refused(answer, "ListOrders as x-user-id", nobody);
    let mut carts = CartServiceClient::new(stack.channel(Service::Cart).await?);
    let answer = carts.get_cart(claiming_to_be_an_admin(GetCartRequest {})).await;
    assert_refused(answer, "GetCart as x-user-id", nobody);
    let mut stock = InventoryServiceClient::new(stack.channel(Service::Inventory).await?);
    let answer = stock
        .get_stock(claiming_to_be_an_admin(GetStockRequest {
            sku: "SKU-MUG-001".into(),
        }))
        .await;
    assert_refused(answer, "GetStock as x-user-id", nobody);
    let mut payments = PaymentServiceClient::new(stack.channel(Service::Payment).await?);
    let answer = payments
        .get_payment(claiming_to_be_an_admin(GetPaymentRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
        }))
        .await;
    assert_refused(answer, "GetPayment as x-user-id", nobody);
    let mut emails = NotificationServiceClient::new(stack.channel(Service::Notify).await?);
    let answer = emails
        .list_notifications(claiming_to_be_an_admin(ListNotificationsRequest::default()))
        .await;
    assert_refused(answer, "ListNotifications as x-user-id", nobody);

    // A well-formed token signed with a key the services do not trust.
    let dir = tempfile::tempdir()?;
    let (signing, verifying) = (dir.path().join("signing.pem"), dir.path().join("verifying.pem"));
    identity::write_key_pair(&signing, &verifying)?;
    let stranger = IdentityIssuer::from_file(&signing)?;
    let forged = stranger.issue(&UserId::parse("alice").expect("valid"), &["admin"], &[LIST_ORDERS]);
    let answer = orders
        .list_orders(with_token(ListOrdersRequest::default(), &forged))
        .await;
    assert_refused(
        answer,
        "a token of another key",
        "not issued by this platform's gateway",
    );

    // The gateway's own token, made for another method.
    let elsewhere = AsUser::admin("alice").token("/shop.order.v1.OrderService/GetOrder");
    let answer = orders
        .list_orders(with_token(ListOrdersRequest::default(), &elsewhere))
        .await;
    assert_refused(answer, "a token for GetOrder", "issued for other methods than");

    // And the gateway's token for this method is believed.
    let genuine = AsUser::customer("alice").token(LIST_ORDERS);
    orders
        .list_orders(with_token(ListOrdersRequest::default(), &genuine))
        .await
        .map_err(|status| anyhow::anyhow!("a vouched call was refused: {status:?}"))?;
    Ok(())
}
