//! `cargo xtask up --observe` and `cargo xtask trace <order id>`: where an
//! operator of the local stack looks.
//!
//! `--observe` runs, next to the stack, the in-repo OTLP collector (spans
//! kept in `.data/traces/spans.jsonl`; the services export to it) and
//! Debian's Prometheus, scraping every service with
//! `deploy/prometheus/prometheus.yml` and evaluating its alerts. `trace`
//! reads the spans back and draws an order's trace as a waterfall.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context;
use shop_infra::{
    collector::{Collector, Trace, read_spans},
    infra::{self, ServerProcess, StopSignal},
};

use crate::{
    cmd,
    layout::Layout,
    ports::{self, Port},
};

/// OTLP/gRPC's own port, where collectors listen by default.
const COLLECTOR_PORT: u16 = 4317;
/// Off 9090, which the Debian package's own Prometheus service takes.
const PROMETHEUS_PORT: u16 = 19090;

/// Where `--observe` listens, with the port offset applied.
pub(crate) struct Observe {
    collector_port: u16,
    prometheus_port: u16,
}

impl Observe {
    pub(crate) fn at(offset: u16) -> anyhow::Result<Self> {
        Ok(Self {
            collector_port: ports::shifted(COLLECTOR_PORT, offset)?,
            prometheus_port: ports::shifted(PROMETHEUS_PORT, offset)?,
        })
    }

    pub(crate) fn ports(&self) -> Vec<Port> {
        vec![
            Port {
                number: self.collector_port,
                purpose: "trace collector (OTLP/gRPC)".into(),
            },
            Port {
                number: self.prometheus_port,
                purpose: "Prometheus".into(),
            },
        ]
    }

    /// What the services are given as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub(crate) fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.collector_port)
    }

    /// Starts the collector and Prometheus; both stop when dropped.
    pub(crate) async fn start(&self, layout: &Layout, data: &Path) -> anyhow::Result<Observing> {
        let spans = spans_file(data);
        let collector = Collector::start_on(
            SocketAddr::from(([127, 0, 0, 1], self.collector_port)),
            Some(spans.clone()),
        )
        .await?;
        println!(
            "trace collector on 127.0.0.1:{} (spans in {})",
            self.collector_port,
            spans.display()
        );

        let dir = data.join("prometheus");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("prometheus.yml");
        let deployed = cmd::root().join("deploy/prometheus");
        let text = std::fs::read_to_string(deployed.join("prometheus.yml"))?;
        std::fs::write(&config, prometheus_config(&text, layout, &deployed))?;
        let program = shop_infra::binaries::find("prometheus").unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
        let mut command = Command::new(program);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.prometheus_port));
        let log = data.join("prometheus.log");
        println!(
            "starting Prometheus on 127.0.0.1:{} (log {})",
            self.prometheus_port,
            log.display()
        );
        let mut prometheus = ServerProcess::spawn("prometheus", &command, StopSignal::Term, Some(&log))?;
        let port = self.prometheus_port;
        prometheus
            .wait_until(Duration::from_secs(30), || infra::tcp_accepts(port))
            .await?;
        Ok(Observing {
            _collector: collector,
            prometheus,
            prometheus_port: port,
        })
    }
}

/// The collector and Prometheus of `--observe`.
pub(crate) struct Observing {
    _collector: Collector,
    prometheus: ServerProcess,
    prometheus_port: u16,
}

impl Observing {
    pub(crate) fn print_summary(&self) {
        println!(
            "Prometheus    http://127.0.0.1:{}  (its alerts: /alerts)",
            self.prometheus_port
        );
        println!("Traces        cargo xtask trace <order_id>");
    }

    pub(crate) async fn stop(&mut self) {
        println!("stopping prometheus");
        self.prometheus.stop().await;
    }
}

/// Where `--observe` keeps the spans.
fn spans_file(data: &Path) -> PathBuf {
    data.join("traces").join("spans.jsonl")
}

/// `deploy/prometheus/prometheus.yml` for this layout: each service's admin
/// port as placed (moved by the offset), every replica's in the same
/// target list, and the alert rules by their path.
fn prometheus_config(deployed: &str, layout: &Layout, dir: &Path) -> String {
    let mut moved: HashMap<String, String> = HashMap::new();
    for placed in &layout.services {
        moved
            .entry(placed.service.admin_port.to_string())
            .and_modify(|targets| {
                // The deployed target is `"127.0.0.1:<port>"` in a list.
                targets.push_str(&format!("\", \"127.0.0.1:{}", placed.admin_port));
            })
            .or_insert_with(|| placed.admin_port.to_string());
    }
    // One pass, so a port moved onto another service's is not moved twice.
    let mut out = String::with_capacity(deployed.len());
    let mut rest = deployed;
    const HOST: &str = "127.0.0.1:";
    while let Some(at) = rest.find(HOST) {
        let (before, after) = rest.split_at(at + HOST.len());
        out.push_str(before);
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        let (port, tail) = after.split_at(digits);
        match moved.get(port) {
            Some(placed) => out.push_str(placed),
            None => out.push_str(port),
        }
        rest = tail;
    }
    out.push_str(rest);
    out.replace("  - alerts.yml", &format!("  - {}", dir.join("alerts.yml").display()))
}

/// `cargo xtask trace <order id>`: the order's trace(s) from the spans of
/// `up --observe`, as waterfalls.
pub(crate) fn trace(order_id: &str) -> anyhow::Result<()> {
    let layout = Layout::from_env()?;
    let file = spans_file(&layout.data_dir(&cmd::root()));
    if !file.is_file() {
        anyhow::bail!(
            "no spans at {}: start the stack with `cargo xtask up --observe`",
            file.display()
        );
    }
    let spans = read_spans(&file)?;
    let traces = Trace::with_attribute("order_id", order_id, &spans);
    if traces.is_empty() {
        anyhow::bail!(
            "no span names order {order_id} among the {} in {}",
            spans.len(),
            file.display()
        );
    }
    for trace in &traces {
        println!("{}", trace.waterfall());
    }
    if traces.len() > 1 {
        println!("(the order's spans are in {} traces)", traces.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prometheus_config_follows_the_offset_and_names_the_rules_by_path() -> anyhow::Result<()> {
        let deployed = std::fs::read_to_string(cmd::root().join("deploy/prometheus/prometheus.yml"))?;
        // An offset of 1 moves svc-order's 9051 onto svc-inventory's 9052.
        let layout = Layout::with_offset(1)?;
        let config = prometheus_config(&deployed, &layout, Path::new("/srv/deploy/prometheus"));
        for placed in &layout.services {
            let target = format!("\"127.0.0.1:{}\"", placed.admin_port);
            assert_eq!(config.matches(&target).count(), 1, "{target} in\n{config}");
        }
        assert!(config.contains("  - /srv/deploy/prometheus/alerts.yml"), "{config}");
        Ok(())
    }

    #[test]
    fn the_prometheus_config_scrapes_every_replica() -> anyhow::Result<()> {
        let deployed = std::fs::read_to_string(cmd::root().join("deploy/prometheus/prometheus.yml"))?;
        let layout = Layout::with_offset(0)?.with_replicas(2)?;
        let config = prometheus_config(&deployed, &layout, Path::new("/srv"));
        assert!(config.contains(r#"["127.0.0.1:9051", "127.0.0.1:9151"]"#), "{config}");
        for placed in &layout.services {
            let target = format!("\"127.0.0.1:{}\"", placed.admin_port);
            assert_eq!(config.matches(&target).count(), 1, "{target} in\n{config}");
        }
        Ok(())
    }
}
