//! A gateway that is going says so at once on its health, so clients that
//! follow it (as `shop_runtime::upstream` does, and a kubelet's gRPC probe)
//! move away and hang up, and it stops at once.

use std::time::Duration;

use futures::StreamExt;
use shop_runtime::CancellationToken;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::support::{Gateway, within};

/// Every upstream at one gRPC server that says it serves.
async fn healthy_upstreams(stop: CancellationToken) -> Vec<(String, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stop.cancelled_owned(),
            ),
    );
    shop_runtime::registry::ALL
        .iter()
        .flat_map(|spec| spec.url_vars)
        .map(|var| ((*var).to_owned(), url.clone()))
        .collect()
}

#[tokio::test]
async fn a_draining_gateway_says_so_at_once_and_stops_once_its_watchers_hang_up() {
    let stop = CancellationToken::new();
    let gateway = Gateway::start(healthy_upstreams(stop.clone()).await).await;
    let mut health = HealthClient::new(gateway.channel().await);
    let mut watch = within("the gateway to serve", 10, async {
        loop {
            let mut watch = health
                .watch(HealthCheckRequest::default())
                .await
                .expect("Health/Watch")
                .into_inner();
            if let Some(Ok(answer)) = watch.next().await
                && answer.status == ServingStatus::Serving as i32
            {
                return watch;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    let began = std::time::Instant::now();
    let stopped = tokio::spawn(gateway.shut_down());
    let answer = within("NOT_SERVING on the watch", 2, async { watch.next().await }).await;
    let status = answer.map(|a| a.map(|a| a.status));
    assert!(
        matches!(status, Some(Ok(s)) if s == ServingStatus::NotServing as i32),
        "{status:?}"
    );
    // As a client following its health does on NOT_SERVING.
    drop((watch, health));
    within("the gateway to stop", 5, stopped)
        .await
        .expect("the gateway's task")
        .expect("stopped cleanly");
    assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
    stop.cancel();
}
