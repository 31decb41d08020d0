//! End-to-end checkout latency: PlaceOrder accepted → `orders.confirmed`
//! observed on NATS, through svc-order, svc-inventory and svc-payment with
//! real PostgreSQL and JetStream (fsync on every publish).
//!
//! ```sh
//! cargo bench -p system-tests --bench checkout_latency
//! CHECKOUT_BENCH_ORDERS=500 CHECKOUT_BENCH_CONCURRENCY=1,8,32 cargo bench -p system-tests --bench checkout_latency
//! CHECKOUT_BENCH_OTLP=on cargo bench -p system-tests --bench checkout_latency
//! ```
//!
//! Spans are always made (trace context is how a checkout's hops join up);
//! with `CHECKOUT_BENCH_OTLP=on` they are also exported, every one (ratio
//! 1), to an OTLP collector in this process: the price of tracing is the
//! difference between the two runs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use shop_harness::{
    Service, Stack,
    bench::{Latencies, Table, env_list, env_number, ms},
    line,
};
use shop_infra::collector::Collector;
use shop_proto::order::v1::PlaceOrderRequest;
use shop_runtime::telemetry::TracingSettings;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let orders: usize = env_number("CHECKOUT_BENCH_ORDERS", 300);
    let concurrencies: Vec<usize> = env_list("CHECKOUT_BENCH_CONCURRENCY", "1,16");
    let collector = match std::env::var("CHECKOUT_BENCH_OTLP").as_deref() {
        Ok("on") => Some(Collector::start().await?),
        _ => None,
    };
    if let Some(collector) = &collector {
        let exporting = TracingSettings {
            otlp_endpoint: Some(collector.endpoint()),
            sample_ratio: 1.0,
        };
        shop_runtime::telemetry::init(None, &shop_runtime::registry::ORDER, &exporting);
    }
    let stack = Stack::start().await?;
    let inventory = stack.pool(Service::Inventory).await?;
    sqlx::query("INSERT INTO products (sku, name, price_minor, currency) VALUES ('SKU-BENCH', 'Bench', 100, 'EUR')")
        .execute(&inventory)
        .await?;
    sqlx::query("INSERT INTO stock (sku, on_hand) VALUES ('SKU-BENCH', 100000000)")
        .execute(&inventory)
        .await?;

    // Confirmation times, by order id, as seen by a plain NATS subscriber.
    let nats = async_nats::connect(stack.nats.url()).await?;
    let confirmed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut subscription = nats.subscribe("orders.confirmed.*").await?;
    let sink = confirmed.clone();
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            if let Some(id) = message.subject.rsplit('.').next() {
                sink.lock().map(|mut m| m.insert(id.to_owned(), Instant::now())).ok();
            }
        }
    });

    println!(
        "checkout latency: PlaceOrder accepted -> orders.confirmed observed ({orders} orders per run, spans {})",
        if collector.is_some() {
            "exported"
        } else {
            "not exported"
        }
    );
    let table = Table::new(&[
        "concurrency",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "mean ms",
        "orders/s",
        "confirmed",
    ]);
    for (run, concurrency) in concurrencies.into_iter().enumerate() {
        let accepted: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let started = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = Vec::new();
        for worker in 0..concurrency.max(1) {
            let mut client = stack.orders(&format!("bench-{worker}")).await?;
            let accepted = accepted.clone();
            let next = next.clone();
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= orders {
                        break;
                    }
                    let request = PlaceOrderRequest {
                        idempotency_key: format!("bench-{run}-{i}"),
                        lines: vec![line("SKU-BENCH", 1)],
                        payment_method: "pm_card_ok".into(),
                    };
                    let order = client.place_order(request).await?.into_inner();
                    accepted
                        .lock()
                        .map(|mut v| v.push((order.order_id, Instant::now())))
                        .ok();
                }
                anyhow::Ok(())
            }));
        }
        for worker in workers {
            worker.await??;
        }
        // Wait (bounded) for every confirmation.
        let accepted = accepted.lock().map(|v| v.clone()).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let seen = confirmed
                .lock()
                .map(|m| accepted.iter().filter(|(id, _)| m.contains_key(id)).count())
                .unwrap_or(0);
            if seen == accepted.len() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed();
        let mut latencies = Latencies::default();
        let seen = confirmed.lock().map(|m| m.clone()).unwrap_or_default();
        for (id, at) in &accepted {
            if let Some(done) = seen.get(id) {
                latencies.record(done.duration_since(*at));
            }
        }
        table.row(vec![
            concurrency.to_string(),
            ms(latencies.ms_at(0.5)),
            ms(latencies.ms_at(0.9)),
            ms(latencies.ms_at(0.99)),
            ms(latencies.max_ms()),
            ms(latencies.mean_ms()),
            format!("{:.0}", latencies.count() as f64 / elapsed.as_secs_f64()),
            format!("{} of {}", latencies.count(), accepted.len()),
        ]);
    }
    if let Some(collector) = &collector {
        // The last spans leave within the export interval.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let metrics = stack.admin_get(Service::Order, "/metrics").await?.1;
        let dropped: u64 = metrics
            .lines()
            .filter(|l| l.starts_with(shop_runtime::series::TRACE_SPANS_DROPPED))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        println!(
            "spans received by the collector: {}, dropped: {dropped}",
            collector.spans().len()
        );
    }
    Ok(())
}
