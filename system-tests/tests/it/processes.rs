//! The saga across the real binaries as separate processes: a service killed
//! with SIGKILL in the middle of checkouts loses nothing.

use shop_harness::{AsUser, Service, StackOptions, eventually, line, processes::ProcessStack};
use shop_proto::order::v1::{
    GetOrderRequest, Order, OrderStatus, PlaceOrderRequest, order_service_client::OrderServiceClient,
};
use tonic::transport::Channel;

async fn client(
    stack: &ProcessStack,
    user: &str,
) -> anyhow::Result<OrderServiceClient<tonic::service::interceptor::InterceptedService<Channel, AsUser>>> {
    let channel = Channel::from_shared(stack.grpc_url(Service::Order))?.connect().await?;
    Ok(OrderServiceClient::with_interceptor(channel, AsUser::customer(user)))
}

async fn status_of(stack: &ProcessStack, user: &str, order_id: &str, wanted: OrderStatus) -> anyhow::Result<Order> {
    eventually(&format!("order {order_id} to be {wanted:?}"), || async {
        let mut orders = client(stack, user).await?;
        let order = orders
            .get_order(GetOrderRequest {
                order_id: order_id.into(),
            })
            .await?
            .into_inner();
        Ok((order.status == wanted as i32).then_some(order))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_survives_a_killed_payment_service() -> anyhow::Result<()> {
    let mut stack = ProcessStack::start(StackOptions::default(), env!("CARGO_BIN_EXE_shop-service")).await?;
    let mut orders = client(&stack, "carol").await?;

    let first = orders
        .place_order(PlaceOrderRequest {
            idempotency_key: "proc-1".into(),
            lines: vec![line("SKU-MUG-001", 1)],
            payment_method: "pm_card_ok".into(),
        })
        .await?
        .into_inner();
    status_of(&stack, "carol", &first.order_id, OrderStatus::Confirmed).await?;

    // The payment service dies; checkouts stop at RESERVED and wait.
    stack.kill(Service::Payment).await?;
    let second = orders
        .place_order(PlaceOrderRequest {
            idempotency_key: "proc-2".into(),
            lines: vec![line("SKU-TEE-001", 1)],
            payment_method: "pm_card_ok".into(),
        })
        .await?
        .into_inner();
    status_of(&stack, "carol", &second.order_id, OrderStatus::Reserved).await?;

    // Back again, it picks up where the durable consumer left off.
    stack.spawn(Service::Payment).await?;
    let settled = status_of(&stack, "carol", &second.order_id, OrderStatus::Confirmed).await;
    if settled.is_err() {
        eprintln!("svc-payment log:\n{}", stack.log(Service::Payment));
    }
    settled?;

    // svc-order killed and restarted keeps serving its orders.
    stack.kill(Service::Order).await?;
    stack.spawn(Service::Order).await?;
    status_of(&stack, "carol", &first.order_id, OrderStatus::Confirmed).await?;
    Ok(())
}
