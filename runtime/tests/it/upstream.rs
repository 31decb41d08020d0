//! A call through [`Balanced`] goes on to the next replica only when it
//! never reached the one tried: refused connections are passed over, a call
//! a replica took is never sent twice.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

use shop_runtime::{
    CancellationToken,
    config::EnvReader,
    registry,
    upstream::{Replicas, UpstreamSettings, was_unsent},
};
use tokio::net::TcpListener;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A real gRPC server with only the health service, on a free port. It
/// says it is not serving, so the balancer keeps every replica in the turn
/// and the calls below meet the closed ports first as often as not.
async fn health_server(stop: CancellationToken) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned()),
    );
    Ok(port)
}

/// A port nothing listens on.
async fn closed_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port())
}

/// An HTTP/2 server that counts the health checks it is sent and drops the
/// connection of each without an answer: a replica that took the call and
/// died. (Health watches come too: the balancer follows each replica's
/// health.)
async fn dying_server(streams: Arc<AtomicUsize>) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let streams = streams.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, _respond))) = connection.accept().await {
                    if request.uri().path() == "/grpc.health.v1.Health/Check" {
                        streams.fetch_add(1, Ordering::SeqCst);
                        // Dropping the connection breaks the stream it took.
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

fn upstream_at(urls: &str) -> anyhow::Result<(UpstreamSettings, Replicas)> {
    let mut env = EnvReader::from_map([("ORDER_URL", urls), ("UPSTREAM_TIMEOUT", "2s")]);
    let settings = UpstreamSettings::read(&mut env);
    let replicas = Replicas::read(&mut env, &registry::ORDER, "ORDER_URL");
    env.finish()?;
    Ok((settings, replicas))
}

#[tokio::test]
async fn a_call_that_no_replica_could_take_goes_to_the_next() -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let up = health_server(stop.clone()).await?;
    let (down, also_down) = (closed_port().await?, closed_port().await?);
    let (settings, replicas) = upstream_at(&format!(
        "http://127.0.0.1:{down},http://127.0.0.1:{up},http://127.0.0.1:{also_down}"
    ))?;
    let mut client = HealthClient::new(settings.balanced("order", &replicas, stop.clone()));
    // Every call, whichever replica's turn it is, ends on the one that is up.
    for call in 0..9 {
        client
            .check(HealthCheckRequest::default())
            .await
            .map_err(|status| anyhow::anyhow!("call {call} failed: {status:?}"))?;
    }

    // With none up, the call fails at once and says nothing was sent.
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (settings, replicas) = upstream_at(&format!("http://127.0.0.1:{down},http://127.0.0.1:{also_down}"))?;
    let mut client = HealthClient::new(settings.balanced("order", &replicas, CancellationToken::new()));
    let status = client
        .check(HealthCheckRequest::default())
        .await
        .expect_err("no replica is up");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(was_unsent(&status), "{status:?}");
    Ok(())
}

#[tokio::test]
async fn a_call_that_reached_a_replica_is_never_sent_to_another() -> anyhow::Result<()> {
    let (first, second) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, b) = (dying_server(first.clone()).await?, dying_server(second.clone()).await?);
    let (settings, replicas) = upstream_at(&format!("http://127.0.0.1:{a},http://127.0.0.1:{b}"))?;
    let mut client = HealthClient::new(settings.balanced("order", &replicas, CancellationToken::new()));
    let status = client
        .check(HealthCheckRequest::default())
        .await
        .expect_err("the replica died with the call");
    assert!(!was_unsent(&status), "it was sent: {status:?}");
    let taken = (first.load(Ordering::SeqCst), second.load(Ordering::SeqCst));
    assert_eq!(taken.0 + taken.1, 1, "one replica took it, and only one: {taken:?}");
    Ok(())
}
