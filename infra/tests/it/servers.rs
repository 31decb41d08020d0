//! The throwaway servers start, answer, and come back after a restart.

use std::time::Duration;

use anyhow::Context;
use shop_infra::{NatsServer, RedisServer, free_port, fresh_database};
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn first_line(port: u16, send: &[u8]) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(send).await?;
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), BufReader::new(stream).read_line(&mut line))
        .await
        .context("no reply")??;
    Ok(line)
}

#[test]
fn free_port_can_be_bound() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port is free");
}

#[tokio::test]
async fn fresh_database_accepts_queries() -> anyhow::Result<()> {
    let url = fresh_database().await?;
    let mut conn = PgConnection::connect(&url).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    assert_eq!(one, 1);
    Ok(())
}

#[tokio::test]
async fn fresh_databases_are_distinct() -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(fresh_database(), fresh_database())?;
    assert_ne!(a, b);

    let mut conn_a = PgConnection::connect(&a).await?;
    sqlx::query("CREATE TABLE only_in_a (id int)")
        .execute(&mut conn_a)
        .await?;
    let mut conn_b = PgConnection::connect(&b).await?;
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'")
        .fetch_one(&mut conn_b)
        .await?;
    assert_eq!(tables, 0);
    Ok(())
}

#[tokio::test]
async fn nats_has_jetstream_and_restarts_on_the_same_port() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let port = nats.port();
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    let info = first_line(port, b"").await?;
    assert!(info.starts_with("INFO "), "{info}");
    assert!(info.contains("\"jetstream\":true"), "{info}");

    nats.stop().await;
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());

    nats.restart().await?;
    assert_eq!(nats.port(), port);
    assert!(first_line(port, b"").await?.starts_with("INFO "));
    Ok(())
}

#[tokio::test]
async fn nats_keeps_streams_across_a_restart() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "KEEP".into(),
        subjects: vec!["keep.>".into()],
        ..Default::default()
    })
    .await?;
    js.publish("keep.one", "payload".into()).await?.await?;
    drop(js);
    drop(client);

    nats.restart().await?;

    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("KEEP").await?;
    assert_eq!(stream.info().await?.state.messages, 1);
    Ok(())
}

#[tokio::test]
async fn redis_answers_ping_and_restarts_on_the_same_port() -> anyhow::Result<()> {
    let mut redis = RedisServer::start().await?;
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(first_line(port, b"PING\r\n").await?, "+PONG\r\n");

    redis.stop().await;
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());

    redis.restart().await?;
    assert_eq!(first_line(port, b"PING\r\n").await?, "+PONG\r\n");
    Ok(())
}

#[tokio::test]
async fn servers_are_isolated() -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(NatsServer::start(), NatsServer::start())?;
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    Ok(())
}
