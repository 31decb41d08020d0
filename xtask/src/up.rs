//! `cargo xtask up`: the whole platform on this machine.
//!
//! NATS, PostgreSQL and Redis keep their data under `.data/` (or come from
//! `NATS_URL`, `DATABASE_URL`, `REDIS_URL`), and so does the payment
//! provider emulator (unless `PAYMENT_PROVIDER_URL` names a provider); the
//! services and the emulator are this workspace's debug builds (release
//! with `--release`). Every port is checked
//! before anything starts, and all of them move together with
//! `SHOP_PORT_OFFSET`. A service that exits is started again (see
//! [`supervise`](crate::supervise)); everything runs until Ctrl-C or until a
//! server of the infrastructure exits (with `--check`: until one checkout
//! through the gateway is confirmed), then stops in reverse order: services,
//! then infrastructure. With `--replicas N`, every service runs N times,
//! each replica on ports of its own, and each service is told where all
//! replicas of the others are.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shop_infra::infra::ServerProcess;
use shop_runtime::registry::{self};

use crate::client::{DevTokens, authorized, dev_tokens, gateway_channel, issue_token};
use crate::layout::{Layout, Placed, Urls, provider_url};
use crate::observe::{Observe, Observing};
use crate::ports::{self};
use crate::stack::{Running, bin_dir, build_services, start_all};
use crate::supervise::{Supervised, Tended};
use crate::{cmd, install};

/// What `cargo xtask up` was asked for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    /// Build and run release binaries.
    pub release: bool,
    /// Place one checkout through the gateway, wait for it to be confirmed,
    /// then stop everything; fail if it is not.
    pub check: bool,
    /// Also run the trace collector and Prometheus (see [`crate::observe`]).
    pub observe: bool,
    /// Run NATS as the three-node cluster of `nats/cluster/`, streams at R3.
    pub nats_cluster: bool,
    /// How many of each service to run (from 1; see [`Layout::with_replicas`]).
    pub replicas: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            release: false,
            check: false,
            observe: false,
            nats_cluster: false,
            replicas: 1,
        }
    }
}

/// How long the `--check` checkout may take to be confirmed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

const WATCH_INTERVAL: Duration = Duration::from_millis(250);

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let began = Instant::now();
    install::run().context("install")?;
    let root = cmd::root();
    let mut layout = Layout::from_env()?.with_replicas(options.replicas)?;
    if options.nats_cluster {
        layout = layout.with_nats_cluster()?;
    }
    let data = layout.data_dir(&root);
    let observe = options.observe.then(|| Observe::at(layout.offset)).transpose()?;
    layout.otlp_endpoint = observe.as_ref().map(Observe::otlp_endpoint);
    let mut needed = layout.ports();
    needed.extend(observe.iter().flat_map(Observe::ports));
    // Before the build, so a taken port fails at once; again before the
    // start, in case something took one meanwhile.
    ports::check_free(&needed)?;

    if let Err(e) = build_services(options.release) {
        eprintln!("warning: {e:#}; starting the services that have a binary");
    }
    if let Err(e) = crate::web::build() {
        eprintln!("warning: {e:#}; the gateway serves no storefront");
    }
    let bin_dir = bin_dir(options.release)?;
    ports::check_free(&needed)?;

    let mut observing = match &observe {
        Some(observe) => Some(observe.start(&layout, &data).await?),
        None => None,
    };
    let mut running = start_all(&layout, &bin_dir, &data, None).await?;
    let Running {
        infra,
        provider,
        services,
        missing,
        urls,
    } = &mut running;

    let gateway = layout
        .gateway_port()
        .filter(|_| services.iter().any(|(p, _)| *p.service == registry::GATEWAY));
    let tokens = match gateway {
        Some(port) => match dev_tokens(port).await {
            Ok(tokens) => Some(tokens),
            Err(e) => {
                eprintln!("warning: no dev tokens from the gateway: {e:#}");
                None
            }
        },
        None => None,
    };
    print_summary(
        urls,
        &layout.provider.url(provider_url),
        services,
        missing,
        observing.as_ref(),
        gateway.zip(tokens.as_ref()),
    );

    let outcome = if options.check {
        // With several gateways, the order is watched through the last:
        // their tokens and the services behind them are shared.
        let last = layout.gateway_ports().last().copied();
        match gateway.zip(last) {
            Some((first, last)) => first_checkout(first, last, began).await,
            None => Err(anyhow::anyhow!("--check needs the gateway, which did not start")),
        }
    } else {
        watch(services, provider.as_mut(), infra).await
    };
    if let Err(e) = &outcome {
        eprintln!("{e:#}: stopping everything");
    }

    // A second Ctrl-C skips the orderly shutdown; the watchdogs still stop
    // every process when this one exits. Signals right after the first are
    // the same Ctrl-C delivered twice (some wrappers signal the child and
    // its process group), not a second one.
    let first = std::time::Instant::now();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if first.elapsed() > Duration::from_secs(1) {
                eprintln!("second Ctrl-C: exiting at once");
                std::process::exit(130);
            }
        }
    });
    running.stop().await;
    if let Some(observing) = &mut observing {
        observing.stop().await;
    }
    outcome
}

/// `--check`: one checkout as a customer would make it through the gateway
/// on port `gateway` (cart, checkout), watched with WatchOrder through the
/// one on `watching` (the same, or another replica) until it is CONFIRMED.
async fn first_checkout(gateway: u16, watching: u16, up_began: Instant) -> anyhow::Result<()> {
    use shop_proto::cart::v1::{AddItemRequest, CheckoutRequest, cart_service_client::CartServiceClient};
    use shop_proto::order::v1::{OrderStatus, WatchOrderRequest, order_service_client::OrderServiceClient};

    let started = Instant::now();
    let channel = gateway_channel(gateway).await?;
    // A new customer each run: data under .data/ outlives runs.
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let token = issue_token(&channel, &format!("check-{millis}"), &["customer"]).await?;
    let bearer: tonic::metadata::AsciiMetadataValue = format!("Bearer {token}").parse()?;

    let mut cart = CartServiceClient::new(channel.clone());
    cart.add_item(authorized(
        &bearer,
        AddItemRequest {
            sku: "SKU-MUG-001".into(),
            quantity: 1,
        },
    ))
    .await
    .context("CartService/AddItem")?;
    let order = cart
        .checkout(authorized(
            &bearer,
            CheckoutRequest {
                idempotency_key: format!("check-{millis}"),
                payment_method: "pm_card_ok".into(),
            },
        ))
        .await
        .context("CartService/Checkout")?
        .into_inner();
    println!("check: order {} accepted", order.order_id);

    let watching = if watching == gateway {
        channel
    } else {
        gateway_channel(watching).await?
    };
    let mut updates = OrderServiceClient::new(watching)
        .watch_order(authorized(
            &bearer,
            WatchOrderRequest {
                order_id: order.order_id.clone(),
            },
        ))
        .await
        .context("OrderService/WatchOrder")?
        .into_inner();
    let settled = async {
        while let Some(update) = updates.message().await.context("OrderService/WatchOrder")? {
            let status = update.status();
            println!("check: order {} {}", update.order_id, status.as_str_name());
            match status {
                OrderStatus::Confirmed => return Ok(()),
                OrderStatus::Cancelled => bail!(
                    "the check's order was cancelled ({})",
                    update.cancel_reason().as_str_name()
                ),
                _ => {}
            }
        }
        bail!("WatchOrder ended before the order was confirmed")
    };
    tokio::time::timeout(CHECK_TIMEOUT, settled)
        .await
        .with_context(|| format!("the check's order was not confirmed within {CHECK_TIMEOUT:?}"))??;
    println!(
        "check: passed, order CONFIRMED {:.1} s after the checkout began, {:.1} s after `up` began",
        started.elapsed().as_secs_f64(),
        up_began.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_summary(
    urls: &Urls,
    provider: &str,
    services: &[(&Placed, Supervised)],
    missing: &[&str],
    observing: Option<&Observing>,
    gateway: Option<(u16, &DevTokens)>,
) {
    println!();
    println!("NATS      {}   (export NATS_URL={0} for the nats CLI)", urls.nats);
    println!("Postgres  {}", urls.postgres);
    println!("Redis     {}", urls.redis);
    println!("Payment provider: {provider}");
    // Wide enough for "svc-inventory-2".
    let width = services
        .iter()
        .map(|(placed, _)| placed.name().len())
        .fold(13, usize::max);
    for (placed, _) in services {
        println!(
            "{:<width$} gRPC 127.0.0.1:{}  admin 127.0.0.1:{}",
            placed.name(),
            placed.grpc_port,
            placed.admin_port
        );
    }
    for name in missing {
        println!("{name:<width$} not started: no binary built for it yet");
    }
    if let Some(observing) = observing {
        observing.print_summary();
    }
    match gateway {
        Some((port, tokens)) => println!(
            r#"
Dev tokens (valid 1 h; the gateway signs them because DEV_AUTH=on):
  export TOKEN='{customer}'        # alice, customer
  export ADMIN_TOKEN='{admin}'     # ops, admin

{storefront}Try, through the gateway on 127.0.0.1:{port}:
  grpcurl -plaintext 127.0.0.1:{port} list
  grpcurl -plaintext 127.0.0.1:{port} shop.catalog.v1.CatalogService/ListProducts
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"sku":"SKU-MUG-001","quantity":2}}' \
    127.0.0.1:{port} shop.cart.v1.CartService/AddItem
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"idempotency_key":"checkout-1","payment_method":"pm_card_ok"}}' \
    127.0.0.1:{port} shop.cart.v1.CartService/Checkout
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"order_id":"<order_id from Checkout>"}}' \
    127.0.0.1:{port} shop.order.v1.OrderService/WatchOrder
  grpcurl -plaintext -H "authorization: Bearer $ADMIN_TOKEN" -d '{{"sku":"SKU-POSTER-001","quantity":5}}' \
    127.0.0.1:{port} shop.inventory.v1.InventoryService/Restock

Ctrl-C stops everything."#,
            customer = tokens.customer,
            admin = tokens.admin,
            storefront = if crate::layout::storefront().join("index.html").is_file() {
                format!("Storefront: http://127.0.0.1:{port}/  (sign in under any name)\n\n")
            } else {
                String::new()
            },
        ),
        None => println!(
            r#"
The gateway did not start. To call a service directly (see the ports
above), send an identity token signed with this stack's key:
  grpcurl -plaintext -H "x-shop-identity: $(cargo xtask identity alice customer shop.order.v1.OrderService/ListOrders)" \
    127.0.0.1:50051 shop.order.v1.OrderService/ListOrders

Ctrl-C stops everything."#
        ),
    }
}

/// Until Ctrl-C (Ok) or a server of the infrastructure exiting (Err). A
/// service (or the payment provider) that exits is started again, with
/// growing pauses, while the rest runs on.
async fn watch(
    services: &mut [(&Placed, Supervised)],
    mut provider: Option<&mut Supervised>,
    infra: &mut [ServerProcess],
) -> anyhow::Result<()> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("listening for Ctrl-C")?;
                println!("\nCtrl-C: stopping");
                return Ok(());
            }
            () = tokio::time::sleep(WATCH_INTERVAL) => {
                let provider = provider.as_deref_mut();
                for service in services.iter_mut().map(|(_, s)| s).chain(provider) {
                    match service.tend()? {
                        Tended::Exited { status, restart_in } => eprintln!(
                            "{} exited ({status}); starting it again in {restart_in:?}",
                            service.name()
                        ),
                        Tended::Restarted { attempt } => {
                            eprintln!("{} started again (restart {attempt} in a row)", service.name());
                        }
                        Tended::Running | Tended::Waiting => {}
                    }
                }
                for process in infra.iter_mut() {
                    if let Some(status) = process.try_wait()? {
                        bail!("{} exited unexpectedly ({status})", process.name());
                    }
                }
            }
        }
    }
}
