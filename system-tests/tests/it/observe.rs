//! What an operator reads: the dashboard and the alerts name only series the
//! services export once a checkout has gone through the gateway, and every
//! expression in them parses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use shop_harness::{Service, Stack, StackOptions, eventually};
use shop_proto::{
    auth::v1::{IssueTokenRequest, dev_auth_service_client::DevAuthServiceClient},
    cart::v1::{AddItemRequest, CheckoutRequest, GetCartRequest, cart_service_client::CartServiceClient},
    order::v1::{GetOrderRequest, OrderStatus, order_service_client::OrderServiceClient},
};
use tonic::{Code, Request, metadata::MetadataValue};

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
    let token = DevAuthServiceClient::new(gateway.clone())
        .issue_token(IssueTokenRequest {
            user_id: "olga".into(),
            roles: vec!["customer".into()],
        })
        .await?
        .into_inner()
        .access_token;
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse()?;
    let as_olga = move |mut request: Request<()>| {
        request.metadata_mut().insert("authorization", bearer.clone());
        Ok(request)
    };
    let mut carts = CartServiceClient::with_interceptor(gateway.clone(), as_olga.clone());
    carts
        .add_item(AddItemRequest {
            sku: "SKU-MUG-001".into(),
            quantity: 1,
        })
        .await?;
    let checkout = |key: &str| CheckoutRequest {
        idempotency_key: key.into(),
        payment_method: "pm_card_ok".into(),
    };
    let order = carts.checkout(checkout("observe-1")).await?.into_inner();
    let refused = carts
        .checkout(checkout("observe-2"))
        .await
        .expect_err("over the order limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let anonymous = CartServiceClient::new(gateway.clone())
        .get_cart(GetCartRequest {})
        .await;
    assert_eq!(anonymous.expect_err("no token").code(), Code::Unauthenticated);
    let orders = OrderServiceClient::with_interceptor(gateway, as_olga);
    eventually("the order to be confirmed", || {
        let request = GetOrderRequest {
            order_id: order.order_id.clone(),
        };
        let mut orders = orders.clone();
        async move {
            Ok((orders.get_order(request).await?.into_inner().status == OrderStatus::Confirmed as i32).then_some(()))
        }
    })
    .await?;

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
