//! The streams on a three-node nats-server cluster: kept on all three
//! (`NATS_STREAM_REPLICAS=3`), so an acknowledged event survives the loss of
//! the node that leads its stream, and publishing goes on without it.

use std::time::Duration;

use shop_infra::NatsCluster;
use shop_runtime::topology;

/// Retries `what` while the cluster elects leaders (seconds, at start and
/// after a node is lost).
async fn patiently<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> anyhow::Result<T> {
    let mut last = String::new();
    for _ in 0..150 {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("{what}: {last}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_kept_on_three_nodes_survive_the_loss_of_their_leader() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start().await?;
    let (_client, js) = shop_runtime::nats::connect(&cluster.url(), "cluster-test").await?;
    patiently("streams at R3", || topology::ensure_streams(&js, 3)).await?;

    let info = js.get_stream("ORDERS").await?.info().await?.clone();
    assert_eq!(info.config.num_replicas, 3);
    let placement = info.cluster.expect("a clustered stream");
    assert_eq!(placement.replicas.len(), 2, "a leader and two replicas: {placement:?}");

    let publish = |id: &'static str| {
        let js = js.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id);
            js.publish_with_headers("orders.test.1", headers, "{}".into())
                .await?
                .await
                .map(drop)
                .map_err(anyhow::Error::from)
        }
    };
    patiently("the first publish", || publish("event-1")).await?;

    // Lose the node that leads ORDERS.
    let leader = placement.leader.expect("a leader");
    let node: usize = leader
        .strip_prefix("shop-n")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a node of nats/cluster/: {leader}"));
    cluster.stop(node).await;
    patiently("a publish without the old leader", || publish("event-2")).await?;
    // A copy of the first sent again is still dropped as a duplicate.
    patiently("the first again", || publish("event-1")).await?;

    let info = patiently("the stream after the loss", || async {
        let mut stream = js.get_stream("ORDERS").await?;
        anyhow::Ok(stream.info().await?.clone())
    })
    .await?;
    assert_eq!(info.state.messages, 2, "both events kept, the duplicate not");
    let now_led_by = info.cluster.and_then(|c| c.leader).expect("a new leader");
    assert_ne!(now_led_by, leader);

    // The node comes back and catches up.
    cluster.restart(node).await?;
    Ok(())
}
