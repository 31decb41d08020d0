//! WatchOrder: the current status at once, every change, the end after a
//! terminal status — also when the change happens on another replica.

use futures::StreamExt;
use shop_harness::{AsUser, Service, Stack, line};
use shop_proto::order::v1::{Order, OrderStatus, WatchOrderRequest, order_service_client::OrderServiceClient};
use tonic::{Code, Status, Streaming, transport::Channel};

use crate::support::{OrderClient, PlaceOrders, without_payment};

/// WatchOrder on `client`'s replica, as the customer it speaks for.
async fn watch(client: &OrderClient, order_id: &str) -> Result<Streaming<Order>, Status> {
    let request = WatchOrderRequest {
        order_id: order_id.into(),
    };
    Ok(client.clone().watch_order(request).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_on_another_replica_sees_every_change_until_the_end() -> anyhow::Result<()> {
    let mut stack = Stack::start_with(without_payment()).await?;
    let (replica_url, replica) = stack.order_replica().await?;

    // Placed through the first replica...
    let order = stack
        .place("dave", "watch-1", vec![line("SKU-MUG-001", 1)], "pm_card_ok")
        .await?;

    // ...watched on the second.
    let channel = Channel::from_shared(replica_url)?.connect().await?;
    let watcher = OrderServiceClient::with_interceptor(channel.clone(), AsUser::customer("dave"));
    let mut updates = watch(&watcher, &order.order_id).await?;
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
    let again: Vec<_> = watch(&watcher, &order.order_id).await?.collect().await;
    assert_eq!(again.len(), 1);

    // Another customer cannot watch it.
    let stranger = OrderServiceClient::with_interceptor(channel, AsUser::customer("eve"));
    let err = watch(&stranger, &order.order_id).await.expect_err("not hers");
    assert_eq!(err.code(), Code::NotFound);
    replica.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watches_beyond_a_replicas_cap_are_refused_until_one_ends() -> anyhow::Result<()> {
    let stack = Stack::start_with(without_payment()).await?;
    let (replica_url, _replica) = stack.order_replica_with(&[("WATCH_MAX_CONCURRENT", "2")]).await?;
    let order = stack
        .place("erin", "watch-cap", vec![line("SKU-MUG-001", 1)], "pm_card_ok")
        .await?;
    let channel = Channel::from_shared(replica_url)?.connect().await?;
    let client = OrderServiceClient::with_interceptor(channel, AsUser::customer("erin"));

    let first = watch(&client, &order.order_id).await?;
    let _second = watch(&client, &order.order_id).await?;
    let refused = watch(&client, &order.order_id).await.expect_err("over the cap");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("GetOrder"), "{}", refused.message());

    // A watch that ends gives its place back.
    drop(first);
    let mut admitted = None;
    for _ in 0..100 {
        match watch(&client, &order.order_id).await {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_customer_cannot_take_every_watch_of_a_replica() -> anyhow::Result<()> {
    let stack = Stack::start_with(without_payment()).await?;
    let limits = [("WATCH_MAX_CONCURRENT", "4"), ("WATCH_MAX_PER_USER", "2")];
    let (replica_url, _replica) = stack.order_replica_with(&limits).await?;
    let channel = Channel::from_shared(replica_url)?.connect().await?;
    let mut clients = Vec::new();
    for user in ["gus", "hal"] {
        let order = stack
            .place(user, "watch-share", vec![line("SKU-MUG-001", 1)], "pm_card_ok")
            .await?;
        let client = OrderServiceClient::with_interceptor(channel.clone(), AsUser::customer(user));
        clients.push((client, order.order_id));
    }
    let (gus, his) = &clients[0];
    let (hal, hers) = &clients[1];

    let _one = watch(gus, his).await?;
    let _two = watch(gus, his).await?;
    let refused = watch(gus, his).await.expect_err("over his share");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("you are watching 2 orders"),
        "{}",
        refused.message()
    );
    // The replica has room for others.
    let _hers = watch(hal, hers).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_shuts_down_ends_its_watches_so_they_move_elsewhere() -> anyhow::Result<()> {
    let stack = Stack::start_with(without_payment()).await?;
    let (replica_url, replica) = stack.order_replica_with(&[("SHUTDOWN_GRACE_PERIOD", "10s")]).await?;
    let order = stack
        .place("fay", "watch-drain", vec![line("SKU-MUG-001", 1)], "pm_card_ok")
        .await?;
    let channel = Channel::from_shared(replica_url)?.connect().await?;
    let client = OrderServiceClient::with_interceptor(channel, AsUser::customer("fay"));
    let mut updates = watch(&client, &order.order_id).await?;
    updates.next().await.transpose()?.expect("the order as it is");

    // Without payment the order stays under way; the watch would stay open.
    let began = std::time::Instant::now();
    replica.cancel();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match updates.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await?;
    let status = ended.expect("an error that says to watch again, not a silent end");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("watch the order again"),
        "{}",
        status.message()
    );
    assert!(
        began.elapsed() < std::time::Duration::from_secs(4),
        "ended with the drain, not at the end of the grace period: {:?}",
        began.elapsed()
    );

    // The watch made again on the replica that stays sees the order.
    let mut elsewhere = stack.orders("fay").await?;
    let again = elsewhere
        .watch_order(WatchOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await?
        .into_inner()
        .next()
        .await
        .transpose()?
        .expect("the order");
    assert_eq!(again.order_id, order.order_id);
    Ok(())
}
