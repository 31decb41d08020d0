//! What the gateway costs: the same unary call (`CatalogService/GetProduct`)
//! straight to svc-inventory and through the gateway (anonymous, and with a
//! bearer token to verify), at several concurrencies, with throughput,
//! p50/p99 latency and the gateway's CPU time per request.
//!
//! ```sh
//! cargo bench -p svc-gateway --bench gateway_overhead
//! GATEWAY_BENCH_SECONDS=5 GATEWAY_BENCH_CONCURRENCY=1,8,32 cargo bench -p svc-gateway --bench gateway_overhead
//! ```
//!
//! CPU attribution: the gateway runs on its own Tokio runtime whose threads
//! are named `gateway-worker`; their on-CPU time is read from
//! `/proc/self/task/<tid>/schedstat` (nanoseconds; falls back to
//! utime+stime from `stat` at 10 ms resolution) before and after each run.
//! The client, svc-inventory and PostgreSQL run elsewhere (main runtime,
//! other processes), so they are not counted. Everything shares the same
//! cores, so absolute latencies include that contention.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use shop_harness::{
    Service, Stack,
    bench::{Latencies, Table, env_list, env_number},
};
use shop_proto::{
    auth::v1::{IssueTokenRequest, dev_auth_service_client::DevAuthServiceClient},
    catalog::v1::{GetProductRequest, catalog_service_client::CatalogServiceClient},
};
use shop_runtime::{CancellationToken, Listeners, config::EnvReader};
use tonic::{metadata::AsciiMetadataValue, transport::Channel};

const GATEWAY_THREAD: &str = "gateway-worker";

/// On-CPU nanoseconds of this process's threads named `name`.
fn cpu_nanos_of_threads(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let from_schedstat = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()));
        total += from_schedstat.unwrap_or_else(|| {
            // stat fields 14 and 15 (utime, stime) in clock ticks of 10 ms;
            // skip past the parenthesised command name first.
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
            let fields: Vec<u64> = after_name.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            // After ")": state is not numeric, so utime/stime are at 10/11.
            (fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0)) * 10_000_000
        });
    }
    total
}

struct RunResult {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Latencies,
    gateway_cpu_ns: u64,
}

async fn run_load(
    channel: Channel,
    token: Option<AsciiMetadataValue>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<RunResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = cpu_nanos_of_threads(GATEWAY_THREAD);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let mut client = CatalogServiceClient::new(channel.clone());
        let stop = stop.clone();
        let token = token.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut request = tonic::Request::new(GetProductRequest {
                    sku: "SKU-MUG-001".into(),
                });
                if let Some(token) = &token {
                    request.metadata_mut().insert("authorization", token.clone());
                }
                let call_started = Instant::now();
                match client.get_product(request).await {
                    Ok(_) => latencies.record(call_started.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Latencies::default();
    let mut errors = 0;
    for worker in workers {
        let (worker_latencies, worker_errors) = worker.await?;
        latencies.merge(&worker_latencies);
        errors += worker_errors;
    }
    let elapsed = started.elapsed();
    let gateway_cpu_ns = cpu_nanos_of_threads(GATEWAY_THREAD).saturating_sub(cpu_before);
    Ok(RunResult {
        requests: latencies.count(),
        errors,
        elapsed,
        latencies,
        gateway_cpu_ns,
    })
}

/// Starts the gateway on a runtime of its own (named threads) in front of
/// the stack; returns its URL and a handle that stops it.
fn start_gateway(stack: &Stack) -> anyhow::Result<(String, CancellationToken, std::thread::JoinHandle<()>)> {
    let mut settings = stack.url_settings();
    settings.extend(
        [
            ("DEV_AUTH", "on"),
            ("RATE_LIMIT_USER_PER_SECOND", "1000000"),
            ("RATE_LIMIT_USER_BURST", "1000000"),
            ("RATE_LIMIT_ANONYMOUS_PER_SECOND", "1000000"),
            ("RATE_LIMIT_ANONYMOUS_BURST", "1000000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let config = svc_gateway::Config::read(EnvReader::from_map(settings)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    // A runtime cannot be built or dropped inside another's async context:
    // the gateway's lives entirely on its own thread.
    let thread = std::thread::Builder::new().name(GATEWAY_THREAD.into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(GATEWAY_THREAD)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = address_tx.send(Err(anyhow::anyhow!("gateway runtime: {e}")));
                return;
            }
        };
        runtime.block_on(async move {
            let listeners = match Listeners::ephemeral().await {
                Ok(listeners) => listeners,
                Err(e) => {
                    let _ = address_tx.send(Err(e.into()));
                    return;
                }
            };
            let address = listeners.grpc.local_addr().map_err(anyhow::Error::from);
            let _ = address_tx.send(address.map(|a| format!("http://{a}")));
            if let Err(e) = svc_gateway::run(config, listeners, token).await {
                eprintln!("gateway failed: {e}");
            }
        });
    })?;
    let url = address_rx.recv()??;
    Ok((url, shutdown, thread))
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    for _ in 0..200 {
        if let Ok(channel) = Channel::from_shared(url.to_owned())?.connect().await {
            return Ok(channel);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("{url} never accepted a connection")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = env_number("GATEWAY_BENCH_SECONDS", 3);
    let concurrencies: Vec<usize> = env_list("GATEWAY_BENCH_CONCURRENCY", "1,8,32");
    let duration = Duration::from_secs(seconds);
    println!(
        "command: GATEWAY_BENCH_SECONDS={seconds} GATEWAY_BENCH_CONCURRENCY={} cargo bench -p svc-gateway --bench gateway_overhead",
        concurrencies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );

    let stack = Stack::start().await?;
    let (gateway_url, shutdown, gateway_thread) = start_gateway(&stack)?;
    let direct = connect(&stack.grpc_url(Service::Inventory)).await?;
    let through_gateway = connect(&gateway_url).await?;
    let issued = DevAuthServiceClient::new(through_gateway.clone())
        .issue_token(IssueTokenRequest {
            user_id: "bench".into(),
            roles: vec!["customer".into()],
        })
        .await?
        .into_inner();
    let bearer: AsciiMetadataValue = format!("Bearer {}", issued.access_token).parse()?;

    // Warm up connections, pools and caches on every path.
    for (channel, token) in [
        (&direct, None),
        (&through_gateway, None),
        (&through_gateway, Some(bearer.clone())),
    ] {
        run_load(channel.clone(), token, 4, Duration::from_millis(500)).await?;
    }

    println!(
        "GetProduct, {seconds}s per cell; latency in milliseconds; gateway CPU = on-CPU time of its runtime's threads per request"
    );
    let table = Table::new(&[
        "path",
        "concurrency",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "gw CPU us/req",
    ]);
    for concurrency in concurrencies {
        for (label, channel, token) in [
            ("direct", &direct, None),
            ("gateway", &through_gateway, None),
            ("gateway+jwt", &through_gateway, Some(bearer.clone())),
        ] {
            let result = run_load(channel.clone(), token, concurrency, duration).await?;
            let per_second = result.requests as f64 / result.elapsed.as_secs_f64();
            let cpu = if label == "direct" || result.requests == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}", result.gateway_cpu_ns as f64 / 1000.0 / result.requests as f64)
            };
            table.row(vec![
                label.to_owned(),
                concurrency.to_string(),
                format!("{per_second:.0}"),
                format!("{:.3}", result.latencies.ms_at(0.5)),
                format!("{:.3}", result.latencies.ms_at(0.99)),
                format!("{:.3}", result.latencies.max_ms()),
                result.errors.to_string(),
                cpu,
            ]);
        }
    }

    shutdown.cancel();
    let _ = tokio::task::spawn_blocking(move || gateway_thread.join()).await;
    Ok(())
}
