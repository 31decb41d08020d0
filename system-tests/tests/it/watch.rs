//! WatchOrder: the current status at once, every change, the end after a
//! terminal status — also when the change happens on another replica.

use futures::StreamExt;
use shop_harness::{AsUser, Service, Stack, StackOptions, line};
use shop_proto::order::v1::{
    OrderStatus, PlaceOrderRequest, WatchOrderRequest, order_service_client::OrderServiceClient,
};
use tonic::{Code, transport::Channel};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_on_another_replica_sees_every_change_until_the_end() -> anyhow::Result<()> {
    let mut stack = Stack::start_with(StackOptions {
        held_back: vec![Service::Payment],
        ..Default::default()
    })
    .await?;
    let (replica_url, replica) = stack.order_replica().await?;

    // Placed through the first replica...
    let order = stack
        .orders("dave")
        .await?
        .place_order(PlaceOrderRequest {
            idempotency_key: "watch-1".into(),
            lines: vec![line("SKU-MUG-001", 1)],
            payment_method: "pm_card_ok".into(),
        })
        .await?
        .into_inner();

    // ...watched on the second.
    let channel = Channel::from_shared(replica_url)?.connect().await?;
    let mut watcher = OrderServiceClient::with_interceptor(channel.clone(), AsUser::customer("dave"));
    let mut updates = watcher
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while let Some(update) = updates.next().await {
        let status = update?.status;
        seen.push(status);
        if status == OrderStatus::Reserved as i32 {
            break;
        }
    }
    assert!(
        seen.iter()
            .all(|s| [OrderStatus::Pending as i32, OrderStatus::Reserved as i32].contains(s)),
        "{seen:?}"
    );

    // Payment comes up on no particular replica; the watcher sees the end.
    stack.start_service(Service::Payment).await?;
    let mut rest = Vec::new();
    while let Some(update) = updates.next().await {
        rest.push(update?.status);
    }
    assert_eq!(
        rest,
        vec![OrderStatus::Confirmed as i32],
        "then CONFIRMED, then the stream ends"
    );

    // Watching a terminal order: its status once, then the end.
    let again: Vec<_> = watcher
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await?
        .into_inner()
        .collect()
        .await;
    assert_eq!(again.len(), 1);

    // Another customer cannot watch it.
    let mut stranger = OrderServiceClient::with_interceptor(channel, AsUser::customer("eve"));
    let err = stranger
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .expect_err("not hers");
    assert_eq!(err.code(), Code::NotFound);
    replica.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watches_beyond_a_replicas_cap_are_refused_until_one_ends() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions {
        held_back: vec![Service::Payment],
        ..Default::default()
    })
    .await?;
    let (replica_url, _replica) = stack.order_replica_with(&[("WATCH_MAX_CONCURRENT", "2")]).await?;
    let order = stack
        .orders("erin")
        .await?
        .place_order(PlaceOrderRequest {
            idempotency_key: "watch-cap".into(),
            lines: vec![line("SKU-MUG-001", 1)],
            payment_method: "pm_card_ok".into(),
        })
        .await?
        .into_inner();
    let channel = Channel::from_shared(replica_url)?.connect().await?;
    let mut client = OrderServiceClient::with_interceptor(channel, AsUser::customer("erin"));
    let watch = |client: &mut OrderServiceClient<_>| {
        let request = WatchOrderRequest {
            order_id: order.order_id.clone(),
        };
        let mut client = client.clone();
        async move { client.watch_order(request).await }
    };

    let first = watch(&mut client).await?.into_inner();
    let _second = watch(&mut client).await?.into_inner();
    let refused = watch(&mut client).await.expect_err("over the cap");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("GetOrder"), "{}", refused.message());

    // A watch that ends gives its place back.
    drop(first);
    let mut admitted = None;
    for _ in 0..100 {
        match watch(&mut client).await {
            Ok(updates) => {
                admitted = Some(updates);
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
    assert!(admitted.is_some(), "a place was freed");
    Ok(())
}
