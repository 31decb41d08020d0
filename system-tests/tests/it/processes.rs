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

/// The value of the series `name{labels…}` in Prometheus text, if exported.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
        .find(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// Each service is a process of its own here, so each `/metrics` counts
/// exactly its own calls: what an operator's dashboard reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_counts_and_times_its_calls_by_method_and_code() -> anyhow::Result<()> {
    let stack = ProcessStack::start(StackOptions::default(), env!("CARGO_BIN_EXE_shop-service")).await?;
    let mut orders = client(&stack, "dora").await?;
    let confirmed = place_with(&mut orders, "m-1", vec![line("SKU-MUG-001", 1)], "pm_card_ok").await?;
    let declined = place_with(&mut orders, "m-2", vec![line("SKU-PEN-001", 1)], "pm_card_declined").await?;
    status_of(&stack, "dora", &confirmed.order_id, OrderStatus::Confirmed).await?;
    status_of(&stack, "dora", &declined.order_id, OrderStatus::Cancelled).await?;
    let missing = get_order(&mut orders, "0190f3c4-2222-7000-8000-00000000000a").await;
    assert_eq!(missing.expect_err("no such order").code(), tonic::Code::NotFound);

    let (code, order_metrics) = stack.admin_get(Service::Order, "/metrics").await?;
    assert_eq!(code, 200);
    let order = |method: &str, code: &str| {
        series(
            &order_metrics,
            "grpc_server_handled_total",
            &[
                ("grpc_service", "shop.order.v1.OrderService"),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
    };
    assert_eq!(order("PlaceOrder", "OK"), Some(2.0), "{order_metrics}");
    assert_eq!(order("GetOrder", "NotFound"), Some(1.0), "{order_metrics}");
    let timed = [
        ("grpc_service", "shop.order.v1.OrderService"),
        ("grpc_method", "PlaceOrder"),
    ];
    assert_eq!(
        series(&order_metrics, "grpc_server_handling_seconds_count", &timed),
        Some(2.0)
    );
    assert_eq!(
        series(
            &order_metrics,
            "grpc_server_handling_seconds_bucket",
            &[timed[0], timed[1], ("le", "+Inf")]
        ),
        Some(2.0),
        "a histogram with buckets, not a summary"
    );

    // The saga's side: what svc-order's consumers handled and its outbox
    // published (orders.placed twice, orders.confirmed, orders.cancelled).
    let order_metrics = eventually("svc-order to report its four events and two settled orders", || async {
        let (_, text) = stack.admin_get(Service::Order, "/metrics").await?;
        let published = series(&text, "shop_outbox_published_total", &[("service", "svc-order")]);
        let settled = series(&text, "shop_order_settle_seconds_count", &[("status", "cancelled")]);
        Ok((published == Some(4.0) && settled.is_some()).then_some(text))
    })
    .await?;
    for consumer in ["order-inventory", "order-payments"] {
        let handled = series(
            &order_metrics,
            "shop_consumer_events_total",
            &[("consumer", consumer), ("result", "handled")],
        );
        assert!(
            handled.is_some_and(|n| n >= 1.0),
            "{consumer}: {handled:?}\n{order_metrics}"
        );
        for name in [
            "shop_consumer_handling_seconds_count",
            "shop_consumer_pending",
            "shop_consumer_ack_pending",
        ] {
            assert!(
                series(&order_metrics, name, &[("consumer", consumer)]).is_some(),
                "{name} of {consumer}\n{order_metrics}"
            );
        }
    }
    for name in [
        "shop_outbox_pending_rows",
        "shop_outbox_oldest_age_seconds",
        "shop_outbox_publish_seconds_count",
    ] {
        assert!(
            series(&order_metrics, name, &[("service", "svc-order")]).is_some(),
            "{name}"
        );
    }
    assert_eq!(
        series(&order_metrics, "shop_dlq_messages", &[]),
        Some(0.0),
        "nothing parked"
    );
    let orders = |status: &str, reason: &str| {
        series(
            &order_metrics,
            "shop_orders_total",
            &[("status", status), ("reason", reason)],
        )
    };
    assert_eq!(orders("placed", ""), Some(2.0));
    assert_eq!(orders("confirmed", ""), Some(1.0));
    assert_eq!(orders("cancelled", "payment_declined"), Some(1.0));
    for status in ["confirmed", "cancelled"] {
        assert_eq!(
            series(&order_metrics, "shop_order_settle_seconds_count", &[("status", status)]),
            Some(1.0),
            "{status}"
        );
    }

    // svc-order priced both orders on the catalog: svc-inventory's count.
    let (_, inventory_metrics) = stack.admin_get(Service::Inventory, "/metrics").await?;
    assert_eq!(
        series(
            &inventory_metrics,
            "grpc_server_handled_total",
            &[
                ("grpc_service", "shop.catalog.v1.CatalogService"),
                ("grpc_method", "ListProducts"),
                ("grpc_code", "OK"),
            ]
        ),
        Some(2.0),
        "{inventory_metrics}"
    );
    Ok(())
}

/// A collector that takes connections and never answers: spans are dropped
/// and counted, and checkouts do not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collector_that_never_answers_costs_spans_not_checkouts() -> anyhow::Result<()> {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", silent.local_addr()?);
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let mut options = StackOptions::default();
    for service in Service::SAGA {
        options = options
            .setting(service, "OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())
            .setting(service, "RUST_LOG", "info");
    }
    let stack = ProcessStack::start(options, env!("CARGO_BIN_EXE_shop-service")).await?;
    let mut orders = client(&stack, "erin").await?;

    let began = std::time::Instant::now();
    let order = place_with(&mut orders, "silent-1", vec![line("SKU-MUG-001", 1)], "pm_card_ok").await?;
    status_of(&stack, "erin", &order.order_id, OrderStatus::Confirmed).await?;
    // Had any hop waited on an export, it would have waited it out.
    assert!(
        began.elapsed() < shop_runtime::telemetry::EXPORT_TIMEOUT,
        "the checkout took {:?}",
        began.elapsed()
    );

    let metrics = eventually("svc-order to count the spans it could not send", || async {
        let (_, text) = stack.admin_get(Service::Order, "/metrics").await?;
        let dropped = series(&text, "shop_trace_spans_dropped_total", &[("reason", "export_failed")]);
        Ok(dropped.is_some_and(|n| n >= 1.0).then_some(text))
    })
    .await?;
    assert_eq!(
        series(&metrics, "shop_trace_spans_exported_total", &[]),
        None,
        "{metrics}"
    );
    holding.abort();
    Ok(())
}
