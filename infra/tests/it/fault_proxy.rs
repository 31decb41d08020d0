//! The fault proxy passes traffic through, and delays, stalls and resets it
//! on demand, in front of an echo server and of PostgreSQL.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use shop_infra::fault_proxy::{Fault, FaultProxy};
use shop_infra::fresh_database;
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

/// How long a stalled connection must stay silent to count as stalled.
const SILENCE: Duration = Duration::from_millis(500);
/// Bound on waiting for something that must happen, so that a broken proxy
/// fails the test instead of hanging it. Not a performance expectation.
const PATIENCE: Duration = Duration::from_secs(10);

/// An echo server on a free port: the upstream under the proxy.
async fn echo_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    Ok(addr)
}

async fn connect(proxy: &FaultProxy) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(proxy.addr()).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `message` and reads back as many bytes.
async fn echo(stream: &mut TcpStream, message: &[u8]) -> anyhow::Result<Vec<u8>> {
    stream.write_all(message).await?;
    let mut reply = vec![0; message.len()];
    timeout(PATIENCE, stream.read_exact(&mut reply))
        .await
        .context("no echo")??;
    Ok(reply)
}

/// Whether the peer closed or reset the connection: a read returns 0 or an
/// error.
async fn is_closed(stream: &mut TcpStream) -> anyhow::Result<bool> {
    let mut buf = [0; 64];
    let read = timeout(PATIENCE, stream.read(&mut buf))
        .await
        .context("neither data nor close")?;
    Ok(matches!(read, Ok(0) | Err(_)))
}

/// Whether the connection stays silent, without data and without error, for
/// [`SILENCE`].
async fn is_silent(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 64];
    timeout(SILENCE, stream.read(&mut buf)).await.is_err()
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::test]
async fn passes_traffic_through() -> anyhow::Result<()> {
    let proxy = FaultProxy::start(echo_server().await?)?;
    let mut stream = connect(&proxy).await?;
    assert_eq!(echo(&mut stream, b"hello").await?, b"hello");

    // Larger than the proxy's chunks and the socket buffers, written while
    // the echo is read, so that order and completeness are both checked.
    let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = stream.split();
    let mut back = vec![0; big.len()];
    let (written, echoed) = tokio::join!(write.write_all(&big), read.read_exact(&mut back));
    written?;
    echoed?;
    assert!(back == big, "the echo differs from what was sent");
    Ok(())
}

#[tokio::test]
async fn latency_delays_each_direction() -> anyhow::Result<()> {
    let delay = Duration::from_millis(200);
    let proxy = FaultProxy::start(echo_server().await?)?;
    // Opened before the fault: it applies to existing connections.
    let mut stream = connect(&proxy).await?;
    assert_eq!(echo(&mut stream, b"before").await?, b"before");

    proxy.set(Fault::Latency(delay));
    let started = Instant::now();
    assert_eq!(echo(&mut stream, b"slow").await?, b"slow");
    // Once on the way up, once on the way back.
    assert!(
        started.elapsed() >= 2 * delay,
        "round trip took {:?}",
        started.elapsed()
    );

    let mut fresh = connect(&proxy).await?;
    let started = Instant::now();
    assert_eq!(echo(&mut fresh, b"new").await?, b"new");
    assert!(
        started.elapsed() >= 2 * delay,
        "round trip took {:?}",
        started.elapsed()
    );

    // Order is kept across chunks sent in a burst.
    let burst: Vec<u8> = (0..50u8).collect();
    for byte in &burst {
        stream.write_all(&[*byte]).await?;
    }
    let mut back = vec![0; burst.len()];
    timeout(PATIENCE, stream.read_exact(&mut back)).await??;
    assert_eq!(back, burst);
    Ok(())
}

#[tokio::test]
async fn late_replies_delay_only_what_the_upstream_sends() -> anyhow::Result<()> {
    let delay = Duration::from_millis(400);
    // An upstream that reports when each request reached it, then echoes it.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream = listener.local_addr()?;
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let mut buf = [0; 64];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    let _ = arrived.send(Instant::now());
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = FaultProxy::start(upstream)?;
    let mut stream = connect(&proxy).await?;
    proxy.set(Fault::LateReplies(delay));

    let sent = Instant::now();
    assert_eq!(echo(&mut stream, b"late").await?, b"late");
    let answered = sent.elapsed();
    let reached = timeout(PATIENCE, arrivals.recv())
        .await?
        .context("the upstream saw no request")?
        - sent;
    assert!(reached < delay, "the request waited {reached:?}");
    assert!(answered >= delay, "the reply came after {answered:?}");
    assert!(answered < 2 * delay, "the request was delayed too: {answered:?}");
    Ok(())
}

#[tokio::test]
async fn reset_closes_open_and_new_connections() -> anyhow::Result<()> {
    let proxy = FaultProxy::start(echo_server().await?)?;
    let mut open = connect(&proxy).await?;
    assert_eq!(echo(&mut open, b"ping").await?, b"ping");
    eventually("one open connection", || proxy.connections() == 1).await?;

    proxy.set(Fault::Reset);
    assert!(is_closed(&mut open).await?, "the open connection got data");
    eventually("no open connection", || proxy.connections() == 0).await?;

    // Accepted by the kernel, then closed by the proxy at once.
    let mut new = connect(&proxy).await?;
    assert!(is_closed(&mut new).await?, "a new connection got data");
    assert_eq!(proxy.connections(), 0);

    proxy.set(Fault::None);
    let mut again = connect(&proxy).await?;
    assert_eq!(echo(&mut again, b"back").await?, b"back");
    Ok(())
}

#[tokio::test]
async fn a_reset_lifted_at_once_still_closes_open_connections() -> anyhow::Result<()> {
    let proxy = FaultProxy::start(echo_server().await?)?;
    let mut open = connect(&proxy).await?;
    assert_eq!(echo(&mut open, b"ping").await?, b"ping");

    let handle = proxy.handle();
    handle.set(Fault::Reset);
    handle.set(Fault::None);
    assert!(is_closed(&mut open).await?, "the open connection got data");
    Ok(())
}

#[tokio::test]
async fn blackhole_stalls_without_error_and_resets_when_lifted() -> anyhow::Result<()> {
    let proxy = FaultProxy::start(echo_server().await?)?;
    let mut open = connect(&proxy).await?;
    assert_eq!(echo(&mut open, b"ping").await?, b"ping");

    proxy.set(Fault::Blackhole);
    open.write_all(b"lost").await?;
    assert!(is_silent(&mut open).await, "a blackholed connection answered or closed");

    let mut new = connect(&proxy).await?;
    new.write_all(b"hello?").await?;
    assert!(
        is_silent(&mut new).await,
        "a connection opened in a blackhole answered or closed"
    );
    eventually("two open connections", || proxy.connections() == 2).await?;

    // Lifted: the stalled connections end instead of resuming mid-stream,
    // and new ones work.
    proxy.set(Fault::None);
    assert!(is_closed(&mut open).await?, "a blackholed connection resumed");
    assert!(is_closed(&mut new).await?, "a connection opened in a blackhole resumed");
    let mut after = connect(&proxy).await?;
    assert_eq!(echo(&mut after, b"back").await?, b"back");
    eventually("one open connection", || proxy.connections() == 1).await?;
    Ok(())
}

#[tokio::test]
async fn stop_closes_everything() -> anyhow::Result<()> {
    let mut proxy = FaultProxy::start(echo_server().await?)?;
    let port = proxy.port();
    let mut open = connect(&proxy).await?;
    assert_eq!(echo(&mut open, b"ping").await?, b"ping");

    timeout(PATIENCE, proxy.stop()).await.context("stop did not finish")?;
    assert_eq!(proxy.connections(), 0);
    assert!(is_closed(&mut open).await?, "the connection outlived the proxy");
    assert!(TcpStream::connect(proxy.addr()).await.is_err(), "still accepting");

    // The port is free again, for a proxy that comes back where it was.
    let upstream = echo_server().await?;
    let again = FaultProxy::start_on(port, upstream)?;
    let mut stream = connect(&again).await?;
    assert_eq!(echo(&mut stream, b"back").await?, b"back");
    Ok(())
}

/// `url` split around its `host:port`.
fn split_authority(url: &str) -> anyhow::Result<(&str, &str, &str)> {
    let start = url.find("://").context("no scheme")? + 3;
    let end = url[start..].find(['/', '?']).map_or(url.len(), |i| start + i);
    let host = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    Ok((&url[..host], &url[host..end], &url[end..]))
}

async fn select_one(conn: &mut PgConnection) -> anyhow::Result<i32> {
    Ok(sqlx::query_scalar("SELECT 1").fetch_one(conn).await?)
}

#[tokio::test]
async fn postgres_through_the_proxy() -> anyhow::Result<()> {
    let database = fresh_database().await?;
    let (before, host_port, after) = split_authority(&database)?;
    let upstream = tokio::net::lookup_host(host_port)
        .await?
        .next()
        .with_context(|| format!("resolving {host_port}"))?;
    let proxy = FaultProxy::start(upstream)?;
    let url = format!("{before}127.0.0.1:{}{after}", proxy.port());

    let mut conn = PgConnection::connect(&url).await?;
    assert_eq!(select_one(&mut conn).await?, 1);

    proxy.set(Fault::Blackhole);
    // A stall: no answer and no error, at least not within the bound.
    match timeout(SILENCE, select_one(&mut conn)).await {
        Err(_elapsed) => {}
        Ok(result) => panic!("a query through a blackhole finished: {result:?}"),
    }
    assert!(
        timeout(SILENCE, PgConnection::connect(&url)).await.is_err(),
        "connecting through a blackhole finished"
    );

    proxy.set(Fault::None);
    let resumed = timeout(PATIENCE, select_one(&mut conn)).await?;
    assert!(resumed.is_err(), "a blackholed connection resumed");
    let mut fresh = timeout(PATIENCE, PgConnection::connect(&url)).await??;
    assert_eq!(select_one(&mut fresh).await?, 1);

    proxy.set(Fault::Reset);
    let after_reset = timeout(PATIENCE, select_one(&mut fresh)).await?;
    assert!(after_reset.is_err(), "a query on a reset connection worked");
    Ok(())
}
