//! The saga across the real binaries as separate processes: a service killed
//! with SIGKILL in the middle of checkouts loses nothing.

use shop_harness::{AsUser, Service, StackOptions, eventually, line, processes::ProcessStack};
use shop_proto::order::v1::{Order, OrderStatus, order_service_client::OrderServiceClient};
use tonic::transport::Channel;

use crate::support::{OrderClient, get_order, place_with};

async fn client(stack: &ProcessStack, user: &str) -> anyhow::Result<OrderClient> {
    let channel = Channel::from_shared(stack.grpc_url(Service::Order))?.connect().await?;
    Ok(OrderServiceClient::with_interceptor(channel, AsUser::customer(user)))
}

async fn status_of(stack: &ProcessStack, user: &str, order_id: &str, wanted: OrderStatus) -> anyhow::Result<Order> {
    eventually(&format!("order {order_id} to be {wanted:?}"), || async {
        let order = get_order(&mut client(stack, user).await?, order_id).await?;
        Ok((order.status == wanted as i32).then_some(order))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_survives_a_killed_payment_service() -> anyhow::Result<()> {
    let mut stack = ProcessStack::start(StackOptions::default(), env!("CARGO_BIN_EXE_shop-service")).await?;
    let mut orders = client(&stack, "carol").await?;

    let first = place_with(&mut orders, "proc-1", vec![line("SKU-MUG-001", 1)], "pm_card_ok").await?;
    status_of(&stack, "carol", &first.order_id, OrderStatus::Confirmed).await?;

    // The payment service dies; checkouts stop at RESERVED and wait.
    stack.kill(Service::Payment).await?;
    let second = place_with(&mut orders, "proc-2", vec![line("SKU-TEE-001", 1)], "pm_card_ok").await?;
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
