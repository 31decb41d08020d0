//! The service life cycle against real PostgreSQL and nats-server: a service
//! starts only when it handles exactly the consumers declared for it, its
//! readiness names every part that is down, and shutdown returns.

use std::time::Duration;

use shop_infra::{NatsServer, PostgresServer, fresh_database, http_get};
use shop_runtime::{
    CancellationToken, Listeners,
    config::{DatabaseSettings, EnvReader, MessagingSettings, ServiceBasics},
    grpc,
    host::{Bus, Host, HostError},
    registry,
    topology::TopologyError,
};

use crate::support::{Scripted, Step};

/// Handles every event by doing nothing.
fn ignore() -> Scripted {
    Scripted::new(|_| Step::Handle)
}

async fn settings(nats: &NatsServer) -> anyhow::Result<(DatabaseSettings, MessagingSettings)> {
    settings_for(nats, fresh_database().await?)
}

fn settings_for(nats: &NatsServer, database_url: String) -> anyhow::Result<(DatabaseSettings, MessagingSettings)> {
    let mut env = EnvReader::from_map([("NATS_URL", nats.url()), ("DATABASE_URL", database_url)]);
    let settings = (DatabaseSettings::read(&mut env), MessagingSettings::read(&mut env));
    env.finish()?;
    Ok(settings)
}

/// svc-notify's basic settings, with `grace` as its shutdown grace period.
fn notify_basics(grace: &str) -> ServiceBasics {
    let mut env = EnvReader::from_map([("SHUTDOWN_GRACE_PERIOD", grace)]);
    ServiceBasics::read(&mut env, &registry::NOTIFY)
}

/// svc-notify's consumers, each handled by doing nothing.
async fn spawn_notify_consumers(host: &mut Host, bus: &Bus) -> anyhow::Result<()> {
    for consumer in ["notify-orders", "notify-payments"] {
        host.spawn_consumer(bus, consumer, ignore()).await?;
    }
    Ok(())
}

/// svc-notify's parts (its database, NATS, its consumers) on a host.
async fn notify_host(
    (database, messaging): (DatabaseSettings, MessagingSettings),
    shutdown: CancellationToken,
) -> anyhow::Result<Host> {
    let mut host = Host::new(&notify_basics("20s"), shutdown);
    host.postgres(&database, sqlx::migrate::Migrator::with_migrations(vec![]))
        .await?;
    let bus = host.nats(&messaging).await?;
    spawn_notify_consumers(&mut host, &bus).await?;
    Ok(host)
}

/// Serves `host` in a task; returns its admin address and the task.
async fn serve(host: Host) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<Result<(), HostError>>)> {
    let (admin, _, serving) = serve_both(host).await?;
    Ok((admin, serving))
}

/// [`serve`], with the gRPC address too.
async fn serve_both(
    host: Host,
) -> anyhow::Result<(
    std::net::SocketAddr,
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), HostError>>,
)> {
    let listeners = Listeners::ephemeral().await?;
    let (admin, grpc_addr) = (listeners.admin.local_addr()?, listeners.grpc.local_addr()?);
    let (router, health) = grpc::router_with_basics(&[], no_one())?;
    Ok((admin, grpc_addr, tokio::spawn(host.serve(router, health, listeners))))
}

#[tokio::test]
async fn a_service_that_does_not_handle_its_declared_consumer_does_not_start() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (_, messaging) = settings(&nats).await?;
    let mut host = Host::new(&notify_basics("20s"), CancellationToken::new());
    let bus = host.nats(&messaging).await?;

    let err = host
        .spawn_consumer(&bus, "order-payments", ignore())
        .await
        .expect_err("another service's consumer");
    assert!(
        matches!(err, HostError::Topology(TopologyError::NotOwn { .. })),
        "{err}"
    );

    let (router, health) = grpc::router_with_basics(&[], no_one())?;
    let err = host
        .serve(router, health, Listeners::ephemeral().await?)
        .await
        .expect_err("notify's consumers have no handler");
    assert_eq!(
        err.to_string(),
        "svc-notify has no handler for notify-orders, notify-payments, declared for it in nats/consumers"
    );
    Ok(())
}

#[tokio::test]
async fn readiness_names_each_part_that_is_down_and_shutdown_returns() -> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let shutdown = CancellationToken::new();
    let mut host = notify_host(settings(&nats).await?, shutdown.clone()).await?;
    host.ready_when(
        "the outage switch",
        std::sync::Arc::new(|| Box::pin(async { Err("the outage switch is on".to_owned()) })),
    );
    let (admin, serving) = serve(host).await?;

    let (code, body) = http_get(admin, "/readyz").await?;
    assert_eq!((code, body.as_str()), (503, "not ready: the outage switch is on\n"));
    nats.stop().await;
    let mut body = String::new();
    for _ in 0..100 {
        body = http_get(admin, "/readyz").await?.1;
        if body.contains("NATS") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body, "not ready: NATS disconnected; the outage switch is on\n");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), serving).await???;
    Ok(())
}

#[tokio::test]
async fn grpc_health_knows_every_service_before_the_first_readiness_check_ends() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let shutdown = CancellationToken::new();
    let mut host = notify_host(settings(&nats).await?, shutdown.clone()).await?;
    // The first answer takes the check's whole bound.
    host.ready_when("a slow check", std::sync::Arc::new(|| Box::pin(std::future::pending())));
    let (_, grpc_addr, serving) = serve_both(host).await?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))?
        .connect()
        .await?;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    for service in ["shop.notify.v1.NotificationService", ""] {
        let answer = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map_err(|status| anyhow::anyhow!("{service:?}: {status:?}"))?;
        assert_eq!(
            answer.into_inner().status,
            2,
            "{service:?} is NOT_SERVING until it is ready"
        );
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), serving).await???;
    Ok(())
}

#[tokio::test]
async fn readyz_follows_the_services_own_database_and_livez_stays_up() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let mut postgres = PostgresServer::start().await?;
    let shutdown = CancellationToken::new();
    let host = notify_host(settings_for(&nats, postgres.url())?, shutdown.clone()).await?;
    let (admin, grpc_addr, serving) = serve_both(host).await?;
    // gRPC health of the service's own API follows readiness too.
    let health_of = || async move {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let channel = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))?
            .connect()
            .await?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: "shop.notify.v1.NotificationService".into(),
            })
            .await?;
        anyhow::Ok(answer.into_inner().status)
    };
    let health_becomes = |wanted: i32| async move {
        for _ in 0..100 {
            if health_of().await? == wanted {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("gRPC health never became {wanted}")
    };
    const SERVING: i32 = 1;
    const NOT_SERVING: i32 = 2;

    let ready = |expected: u16| async move {
        for _ in 0..100 {
            let (code, body) = http_get(admin, "/readyz").await?;
            if code == expected {
                return anyhow::Ok(body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("/readyz never answered {expected}")
    };
    assert_eq!(ready(200).await?, "ready\n");
    health_becomes(SERVING).await?;
    postgres.stop().await;
    // Refused, or no answer within the check's bound: either way it names
    // the database, and the probe does not hang with it.
    let unready = ready(503).await?;
    assert!(unready.starts_with("not ready: database "), "{unready}");
    assert_eq!(http_get(admin, "/livez").await?.0, 200, "the process is alive");
    health_becomes(NOT_SERVING).await?;
    postgres.restart().await?;
    assert_eq!(ready(200).await?, "ready\n", "ready again, without a restart");
    health_becomes(SERVING).await?;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), serving).await???;
    Ok(())
}

/// A verifier that trusts no key: these services have no callers to vouch for.
fn no_one() -> std::sync::Arc<shop_runtime::identity::IdentityVerifier> {
    std::sync::Arc::new(shop_runtime::identity::IdentityVerifier::new(&[]))
}

#[tokio::test]
async fn a_draining_service_says_so_at_once_serves_a_moment_longer_and_ends_within_its_grace_period()
-> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    const NOT_SERVING: i32 = 2;
    let nats = NatsServer::start().await?;
    let shutdown = CancellationToken::new();
    let (database, messaging) = settings(&nats).await?;
    let mut host = Host::new(&notify_basics("3s"), shutdown.clone());
    host.postgres(&database, sqlx::migrate::Migrator::with_migrations(vec![]))
        .await?;
    let bus = host.nats(&messaging).await?;
    spawn_notify_consumers(&mut host, &bus).await?;
    // A task that never finishes: the grace period ends it.
    host.spawn(std::future::pending());
    let (admin, grpc_addr, serving) = serve_both(host).await?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"))?
        .connect()
        .await?;
    for _ in 0..100 {
        if http_get(admin, "/readyz").await?.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http_get(admin, "/readyz").await?.0, 200);
    // A stream that would stay open for ever.
    let mut watching = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest { service: String::new() })
        .await?
        .into_inner();

    let began = std::time::Instant::now();
    shutdown.cancel();
    let (code, body) = http_get(admin, "/readyz").await?;
    assert_eq!((code, body.as_str()), (503, "not ready: shutting down\n"));
    // Still answering while callers notice, and saying it is going.
    let answer = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: String::new() })
        .await?;
    assert_eq!(answer.into_inner().status, NOT_SERVING);
    let mut said = None;
    while let Ok(Some(update)) = tokio::time::timeout(Duration::from_secs(1), watching.message()).await? {
        said = Some(update.status);
        if update.status == NOT_SERVING {
            break;
        }
    }
    assert_eq!(said, Some(NOT_SERVING), "a health watcher hears it at once");

    tokio::time::timeout(Duration::from_secs(6), serving).await???;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(2_900) && took < Duration::from_secs(5),
        "ended by the grace period (3 s), not before it and not much after: {took:?}"
    );
    Ok(())
}
