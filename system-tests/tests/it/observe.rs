//! What an operator reads: the dashboard and the alerts name only series the
//! services export once a checkout has gone through the gateway, and every
//! expression in them parses; one checkout is one trace, across every
//! service and every event.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use shop_harness::{Service, Stack, StackOptions, eventually, processes::ProcessStack};
use shop_infra::collector::{Collector, Trace};
use shop_proto::{
    auth::v1::{IssueTokenRequest, dev_auth_service_client::DevAuthServiceClient},
    cart::v1::{AddItemRequest, CheckoutRequest, GetCartRequest, cart_service_client::CartServiceClient},
    order::v1::{GetOrderRequest, OrderStatus, order_service_client::OrderServiceClient},
};
use tonic::{
    Code, Request, Status,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

/// Calls as `user`, with a development token the gateway issued.
async fn customer(
    gateway: &Channel,
    user: &str,
) -> anyhow::Result<impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<>> {
    let token = DevAuthServiceClient::new(gateway.clone())
        .issue_token(IssueTokenRequest {
            user_id: user.into(),
            roles: vec!["customer".into()],
        })
        .await?
        .into_inner()
        .access_token;
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse()?;
    Ok(move |mut request: Request<()>| {
        request.metadata_mut().insert("authorization", bearer.clone());
        Ok(request)
    })
}

fn checkout(key: &str) -> CheckoutRequest {
    CheckoutRequest {
        idempotency_key: key.into(),
        payment_method: "pm_card_ok".into(),
    }
}

/// Puts a mug in the cart and checks out; the new order's id.
async fn check_out<F>(
    carts: &mut CartServiceClient<tonic::service::interceptor::InterceptedService<Channel, F>>,
    key: &str,
) -> anyhow::Result<String>
where
    F: tonic::service::Interceptor,
{
    carts
        .add_item(AddItemRequest {
            sku: "SKU-MUG-001".into(),
            quantity: 1,
        })
        .await?;
    Ok(carts.checkout(checkout(key)).await?.into_inner().order_id)
}

/// Waits for the order to be confirmed, asking the gateway.
async fn confirmed<F>(gateway: &Channel, customer: F, order_id: &str) -> anyhow::Result<()>
where
    F: tonic::service::Interceptor + Clone + Send + Sync,
{
    let orders = OrderServiceClient::with_interceptor(gateway.clone(), customer);
    eventually("the order to be confirmed", || {
        let request = GetOrderRequest {
            order_id: order_id.to_owned(),
        };
        let mut orders = orders.clone();
        async move {
            Ok((orders.get_order(request).await?.into_inner().status == OrderStatus::Confirmed as i32).then_some(()))
        }
    })
    .await
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every name in `text` that is one of the platform's series.
fn series_named_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("shop_") || word.starts_with("grpc_server_"))
        .map(|word| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_owned()
        })
        .collect()
}

/// The names of the series in Prometheus text (a histogram by its base name).
fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .flat_map(series_named_in)
        .collect()
}

/// Every `expr` of the dashboard's panels.
fn dashboard_expressions() -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(deploy().join("grafana/dashboards/checkout.json"))?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)?;
    Ok(dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_and_the_alerts_name_only_series_the_services_export() -> anyhow::Result<()> {
    // One checkout per second per user, so a second one at once is refused
    // and the edge's refusals are exported too.
    let options = StackOptions::default()
        .with(Service::Cart)
        .with(Service::Gateway)
        .setting(Service::Gateway, "DEV_AUTH", "on")
        .setting(Service::Gateway, "RATE_LIMIT_ORDER_PER_SECOND", "1")
        .setting(Service::Gateway, "RATE_LIMIT_ORDER_BURST", "1");
    let stack = Stack::start_with(options).await?;
    let gateway = stack.channel(Service::Gateway).await?;
    let as_olga = customer(&gateway, "olga").await?;
    let mut carts = CartServiceClient::with_interceptor(gateway.clone(), as_olga.clone());
    let order_id = check_out(&mut carts, "observe-1").await?;
    let refused = carts
        .checkout(checkout("observe-2"))
        .await
        .expect_err("over the order limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let anonymous = CartServiceClient::new(gateway.clone())
        .get_cart(GetCartRequest {})
        .await;
    assert_eq!(anonymous.expect_err("no token").code(), Code::Unauthenticated);
    confirmed(&gateway, as_olga, &order_id).await?;

    // Every service of the stack records into this process's one registry.
    let metrics = eventually("the settle time to be recorded", || async {
        let (_, text) = stack.admin_get(Service::Order, "/metrics").await?;
        Ok(text.contains("shop_order_settle_seconds_count").then_some(text))
    })
    .await?;
    let exported = exported(&metrics);
    let expressions = dashboard_expressions()?;
    assert!(!expressions.is_empty(), "the dashboard has panels");
    let alerts = std::fs::read_to_string(deploy().join("prometheus/alerts.yml"))?;
    for (what, named) in [
        ("the dashboard", series_named_in(&expressions.join("\n"))),
        ("alerts.yml", series_named_in(&alerts)),
    ] {
        let missing: Vec<&String> = named.difference(&exported).collect();
        assert!(missing.is_empty(), "{what} names {missing:?}, which no service exports");
    }

    // Every dashboard expression parses: promtool checks them as recording rules.
    let rules: String = expressions
        .iter()
        .enumerate()
        .map(|(n, expr)| {
            format!(
                "      - record: dashboard:panel_{n}\n        expr: {}\n",
                serde_json::to_string(expr).unwrap_or_default()
            )
        })
        .collect();
    let file = tempfile::Builder::new().suffix(".yml").tempfile()?;
    std::fs::write(
        file.path(),
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )?;
    let promtool = shop_infra::binaries::find("promtool").unwrap_or_else(|| PathBuf::from("/usr/bin/promtool"));
    let checked = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(file.path())
        .output()?;
    assert!(
        checked.status.success(),
        "a dashboard expression does not parse:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    Ok(())
}

/// Every service, each a process of its own, exporting its spans to
/// `collector`; and a channel to the gateway.
async fn exporting_to(collector: &Collector, options: StackOptions) -> anyhow::Result<(ProcessStack, Channel)> {
    let mut options = options
        .with(Service::Cart)
        .with(Service::Gateway)
        .setting(Service::Gateway, "DEV_AUTH", "on");
    for service in Service::ALL {
        // Spans are at `info`, like the log lines they share a filter with.
        options = options
            .setting(service, "OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
            .setting(service, "RUST_LOG", "info");
    }
    let stack = ProcessStack::start(options, env!("CARGO_BIN_EXE_shop-service")).await?;
    let gateway = Endpoint::from_shared(stack.grpc_url(Service::Gateway))?
        .connect()
        .await?;
    Ok((stack, gateway))
}

/// Waits until the order's spans are one trace with one root, from each of
/// `services`, its last hops (the email, the cart cleared) included: they
/// end after the order is confirmed, and spans leave a process every half
/// second.
async fn whole_trace(collector: &Collector, order_id: &str, services: &[Service]) -> anyhow::Result<()> {
    eventually("the checkout's trace to be whole", || async {
        let traces = Trace::with_attribute("order_id", order_id, &collector.spans());
        let [trace] = &traces[..] else { return Ok(None) };
        let consumer_in = |service: &str| {
            trace
                .spans
                .iter()
                .any(|(_, s)| s.service == service && s.kind == "consumer")
        };
        let whole = trace.roots == 1
            && consumer_in("svc-notify")
            && consumer_in("svc-cart")
            && services.iter().all(|s| trace.services().contains(&s.spec().name));
        Ok(whole.then_some(()))
    })
    .await
}

/// Each service in its own process exports its spans to one collector: the
/// spans of a checkout, from the gateway to the cart being cleared, form one
/// tree whose every span's parent was received.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_checkout_through_the_gateway_is_one_trace_across_every_service() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let (_stack, gateway) = exporting_to(&collector, StackOptions::default()).await?;
    let as_tess = customer(&gateway, "tess").await?;
    let mut carts = CartServiceClient::with_interceptor(gateway.clone(), as_tess.clone());
    let order_id = check_out(&mut carts, "traced-1").await?;
    confirmed(&gateway, as_tess, &order_id).await?;

    let waited = whole_trace(&collector, &order_id, &Service::ALL).await;
    let traces = Trace::with_attribute("order_id", &order_id, &collector.spans());
    let drawn: String = traces.iter().map(Trace::waterfall).collect();
    assert!(
        waited.is_ok(),
        "one tree from every service, each span's parent received:\n{drawn}"
    );
    let trace = &traces[0];
    let (_, root) = &trace.spans[0];
    assert_eq!(
        (root.service.as_str(), root.name.as_str(), root.kind.as_str()),
        ("svc-gateway", "shop.cart.v1.CartService/Checkout", "server"),
        "{drawn}"
    );
    let has = |service: &str, name: &str, kind: &str| {
        trace
            .spans
            .iter()
            .any(|(_, s)| s.service == service && s.name.contains(name) && s.kind == kind)
    };
    for (service, name, kind) in [
        ("svc-cart", "CartService/Checkout", "server"),
        ("svc-order", "OrderService/PlaceOrder", "server"),
        ("svc-order", "orders.placed publish", "producer"),
        ("svc-inventory", "process", "consumer"),
        ("svc-payment", "provider charge", "client"),
        ("svc-order", "orders.confirmed publish", "producer"),
        ("svc-notify", "process", "consumer"),
        ("svc-cart", "process", "consumer"),
    ] {
        assert!(
            has(service, name, kind),
            "no {kind} span {name:?} of {service}:\n{drawn}"
        );
    }
    // Across NATS, a consumer's parent is the relay's publish span.
    let by_id: std::collections::HashMap<&str, &shop_infra::collector::StoredSpan> =
        trace.spans.iter().map(|(_, s)| (s.span_id.as_str(), s)).collect();
    for (_, consumer) in trace.spans.iter().filter(|(_, s)| s.kind == "consumer") {
        let parent = consumer.parent_span_id.as_deref().and_then(|p| by_id.get(p));
        assert_eq!(
            parent.map(|p| p.kind.as_str()),
            Some("producer"),
            "{}:\n{drawn}",
            consumer.name
        );
    }
    Ok(())
}

/// Sampling is decided once, where a trace begins: with the gateway keeping
/// none of its traces, no service records a span of a checkout made through
/// it, while one begun at svc-cart (which keeps all of its own) is recorded
/// whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sampling_decision_of_a_checkouts_first_hop_holds_for_every_service() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let none_sampled = StackOptions::default().setting(Service::Gateway, "OTEL_TRACES_SAMPLER_ARG", "0");
    let (stack, gateway) = exporting_to(&collector, none_sampled).await?;
    let as_uma = customer(&gateway, "uma").await?;
    let mut carts = CartServiceClient::with_interceptor(gateway.clone(), as_uma.clone());
    let unsampled = check_out(&mut carts, "unsampled-1").await?;
    confirmed(&gateway, as_uma.clone(), &unsampled).await?;

    let cart = Endpoint::from_shared(stack.grpc_url(Service::Cart))?.connect().await?;
    let mut direct = CartServiceClient::with_interceptor(cart, shop_harness::AsUser::customer("uma"));
    let sampled = check_out(&mut direct, "sampled-1").await?;
    confirmed(&gateway, as_uma, &sampled).await?;
    // Once the later checkout's last spans are in, the earlier one's would be.
    // It began at svc-cart: every service but the gateway.
    let behind_the_gateway: Vec<Service> = Service::ALL.into_iter().filter(|s| *s != Service::Gateway).collect();
    whole_trace(&collector, &sampled, &behind_the_gateway).await?;
    let leaked = Trace::with_attribute("order_id", &unsampled, &collector.spans());
    let drawn: String = leaked.iter().map(Trace::waterfall).collect();
    assert!(
        leaked.is_empty(),
        "spans of a checkout the gateway did not sample:\n{drawn}"
    );
    Ok(())
}
