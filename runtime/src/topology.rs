//! Streams and durable consumers, declared in `nats/` as the JSON the nats
//! CLI accepts (`nats stream add --config nats/streams/ORDERS.json`) and
//! ensured idempotently at service start. The files are the declaration:
//! the build embeds every one of them, a consumer's durable name is its file
//! name, and its stream is its directory.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};

use crate::config::parse_duration;

// STREAMS and CONSUMERS: every file of `nats/streams/` and `nats/consumers/`
// (see build.rs).
include!(concat!(env!("OUT_DIR"), "/topology.rs"));

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("definition of {0} is not valid JSON for JetStream: {1}")]
    Definition(String, serde_json::Error),
    #[error("consumer {0}: metadata {1} is missing or not a duration (e.g. 250ms, 30s)")]
    Metadata(String, String),
    #[error("no consumer named {0} is declared in nats/consumers")]
    UnknownConsumer(String),
    #[error(
        "{file} must declare durable_name {:?} (its file name), not {durable_name:?}",
        file_stem(file)
    )]
    Misnamed { file: String, durable_name: Option<String> },
    #[error(
        "consumer {consumer} is not {service}'s: a consumer's name begins with the short name of the service that runs it"
    )]
    NotOwn { consumer: String, service: &'static str },
    #[error("{service} has no handler for {consumers}, declared for it in nats/consumers")]
    Unhandled { service: &'static str, consumers: String },
    #[error("JetStream refused {what}: {source}")]
    JetStream {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn file_stem(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path).trim_end_matches(".json")
}

/// A durable pull consumer as declared in `nats/consumers/<STREAM>/<name>.json`.
#[derive(Debug, Clone)]
pub struct ConsumerDefinition {
    pub stream: &'static str,
    pub config: pull::Config,
    /// How a message whose handler failed transiently is redelivered
    /// (metadata `shop.retry_initial`, `shop.retry_max`).
    pub retry: Backoff,
    /// How long one handling may take (metadata `shop.handler_timeout`);
    /// past it the handler is dropped and the message retried, so a hung
    /// call cannot pin a slot or hold up shutdown for good.
    pub handler_timeout: Duration,
}

impl ConsumerDefinition {
    pub fn name(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }
}

/// Capped exponential backoff with jitter, and no last attempt: a transient
/// failure is retried for as long as it lasts, each message ever more slowly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failed delivery.
    pub initial: Duration,
    /// The longest delay; reached after a few doublings and kept.
    pub max: Duration,
}

impl Backoff {
    /// The delay before delivery `delivered + 1`: `initial` doubled per
    /// failed delivery up to `max`, of which the upper half is random
    /// (`jitter` in 0..=1), so messages that failed together do not all
    /// come back at once.
    pub fn delay(&self, delivered: i64, jitter: f64) -> Duration {
        let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let full = self.initial.saturating_mul(1 << doublings).min(self.max);
        full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }
}

/// Every stream definition.
pub fn streams() -> Result<Vec<stream::Config>, TopologyError> {
    STREAMS
        .iter()
        .map(|(name, json)| {
            serde_json::from_str(json).map_err(|e| TopologyError::Definition(format!("stream {name}"), e))
        })
        .collect()
}

/// The definition of one durable consumer.
pub fn consumer(name: &str) -> Result<ConsumerDefinition, TopologyError> {
    let (stream, _, json) = CONSUMERS
        .iter()
        .find(|(_, n, _)| *n == name)
        .ok_or_else(|| TopologyError::UnknownConsumer(name.to_owned()))?;
    parse_consumer(stream, name, json)
}

/// A consumer's definition from its file `nats/consumers/<stream>/<name>.json`.
fn parse_consumer(stream: &'static str, name: &str, json: &str) -> Result<ConsumerDefinition, TopologyError> {
    let config: pull::Config =
        serde_json::from_str(json).map_err(|e| TopologyError::Definition(format!("consumer {name}"), e))?;
    if config.durable_name.as_deref() != Some(name) {
        return Err(TopologyError::Misnamed {
            file: format!("nats/consumers/{stream}/{name}.json"),
            durable_name: config.durable_name.clone(),
        });
    }
    let duration = |key: &str| {
        config
            .metadata
            .get(key)
            .and_then(|raw| parse_duration(raw))
            .ok_or_else(|| TopologyError::Metadata(name.to_owned(), key.to_owned()))
    };
    let retry = Backoff {
        initial: duration("shop.retry_initial")?,
        max: duration("shop.retry_max")?,
    };
    let handler_timeout = duration("shop.handler_timeout")?;
    Ok(ConsumerDefinition {
        stream,
        config,
        retry,
        handler_timeout,
    })
}

/// The short name of the service that runs consumer `name`: the part of
/// the name before the first `-` (`order-payments` is svc-order's).
pub fn owner_of_consumer(name: &str) -> Option<&str> {
    name.split_once('-').map(|(owner, _)| owner)
}

/// The consumers declared for the service with short name `short`.
pub fn consumers_of(short: &str) -> Vec<&'static str> {
    CONSUMERS
        .iter()
        .map(|(_, name, _)| *name)
        .filter(|name| owner_of_consumer(name) == Some(short))
        .collect()
}

/// Every consumer definition.
pub fn consumers() -> Result<Vec<ConsumerDefinition>, TopologyError> {
    CONSUMERS.iter().map(|(_, name, _)| consumer(name)).collect()
}

/// Creates or updates every stream (idempotent; safe from several services
/// at once since they all apply the same definitions), each kept on
/// `replicas` servers: 1 on a single nats-server, 3 on a cluster
/// (`NATS_STREAM_REPLICAS`). An existing stream is moved to that many; the
/// consumers follow their stream.
pub async fn ensure_streams(js: &jetstream::Context, replicas: usize) -> Result<(), TopologyError> {
    for mut config in streams()? {
        config.num_replicas = replicas;
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|e| TopologyError::JetStream {
                what: format!("stream {name}"),
                source: Box::new(e),
            })?;
    }
    Ok(())
}

/// How far behind one declared consumer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub consumer: String,
    /// None when the consumer does not exist (its service never started).
    pub state: Option<BacklogState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogState {
    /// Messages not delivered yet.
    pub pending: u64,
    /// Delivered and neither acknowledged nor terminated (being handled,
    /// or waiting out a retry's delay).
    pub unacknowledged: usize,
}

impl Backlog {
    /// Nothing left to handle (or nobody to handle it).
    pub fn is_idle(&self) -> bool {
        self.state.is_none_or(|s| s.pending == 0 && s.unacknowledged == 0)
    }
}

/// The backlog of every declared consumer: "has everything been handled?"
/// for tests, fault runs and operators.
pub async fn backlogs(js: &jetstream::Context) -> Result<Vec<Backlog>, TopologyError> {
    let mut out = Vec::new();
    for definition in consumers()? {
        let name = definition.name().to_owned();
        let stream = js
            .get_stream(definition.stream)
            .await
            .map_err(|e| TopologyError::JetStream {
                what: format!("stream {}", definition.stream),
                source: Box::new(e),
            })?;
        let state = match stream.get_consumer::<pull::Config>(&name).await {
            Ok(mut consumer) => {
                let info = consumer.info().await.map_err(|e| TopologyError::JetStream {
                    what: format!("consumer {name}"),
                    source: Box::new(e),
                })?;
                Some(BacklogState {
                    pending: info.num_pending,
                    unacknowledged: info.num_ack_pending,
                })
            }
            Err(_) => None,
        };
        out.push(Backlog { consumer: name, state });
    }
    Ok(out)
}

/// Creates or updates the named consumers and returns their definitions.
pub async fn ensure_consumers(
    js: &jetstream::Context,
    names: &[&str],
) -> Result<Vec<ConsumerDefinition>, TopologyError> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let definition = consumer(name)?;
        let stream = js
            .get_stream(definition.stream)
            .await
            .map_err(|e| TopologyError::JetStream {
                what: format!("stream {} (for consumer {name})", definition.stream),
                source: Box::new(e),
            })?;
        stream
            .create_consumer(definition.config.clone())
            .await
            .map_err(|e| TopologyError::JetStream {
                what: format!("consumer {name}"),
                source: Box::new(e),
            })?;
        out.push(definition);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_the_upper_half_random() {
        let backoff = Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        };
        let lowest = |delivered| backoff.delay(delivered, 0.0);
        let highest = |delivered| backoff.delay(delivered, 1.0);
        assert_eq!(highest(1), Duration::from_millis(250));
        assert_eq!(lowest(1), Duration::from_millis(125));
        assert_eq!(highest(2), Duration::from_millis(500));
        assert_eq!(highest(8), Duration::from_secs(30), "capped");
        assert_eq!(lowest(1_000_000), Duration::from_secs(15), "no overflow, still capped");
        assert_eq!(highest(0), Duration::from_millis(250));
    }

    /// Every consumer belongs to a service of the registry that consumes
    /// events, by its name; which service handles it is then checked when
    /// that service starts ([`crate::host::Host::serve_with`]).
    #[test]
    fn every_consumer_is_named_for_a_service_of_the_registry() {
        for (stream, name, _) in CONSUMERS {
            let owner = owner_of_consumer(name).unwrap_or_default();
            assert!(
                crate::registry::ALL.iter().any(|spec| spec.short == owner),
                "nats/consumers/{stream}/{name}.json: {owner:?} is no service's short name"
            );
        }
        assert_eq!(consumers_of("order"), ["order-inventory", "order-payments"]);
        assert!(consumers_of("gateway").is_empty());
    }

    #[test]
    fn a_consumer_file_must_carry_its_own_name() {
        let (_, _, json) = CONSUMERS
            .iter()
            .find(|(_, name, _)| *name == "payment-orders")
            .expect("declared");
        assert!(parse_consumer("ORDERS", "payment-orders", json).is_ok());
        let copied = parse_consumer("ORDERS", "refund-orders", json).expect_err("a copy under a new name");
        assert_eq!(
            copied.to_string(),
            r#"nats/consumers/ORDERS/refund-orders.json must declare durable_name "refund-orders" (its file name), not Some("payment-orders")"#
        );
    }

    #[test]
    fn every_definition_parses_and_matches_its_file_name() {
        let streams = streams().expect("streams parse");
        for (config, (name, _)) in streams.iter().zip(STREAMS) {
            assert_eq!(config.name, *name);
            assert!(
                config.duplicate_window >= Duration::from_secs(120),
                "{name}: dedupe window too short"
            );
        }
        for definition in consumers().expect("consumers parse") {
            let name = definition.name().to_owned();
            assert!(!name.is_empty());
            assert_eq!(
                definition.config.ack_policy,
                jetstream::consumer::AckPolicy::Explicit,
                "{name}"
            );
            // A backstop, not a policy: a limit is what stops a bug misread
            // as transient from retrying for ever, and it must leave hours
            // for a dependency to come back (each retry waits at least half
            // the cap once there).
            let deliveries = u32::try_from(definition.config.max_deliver).unwrap_or(0);
            assert!(
                deliveries > 0 && definition.retry.max / 2 * deliveries >= Duration::from_secs(3600),
                "{name}: max_deliver {} allows under an hour of retries",
                definition.config.max_deliver
            );
            assert!(definition.retry.initial < definition.retry.max, "{name}: retry backoff");
            let stream = streams
                .iter()
                .find(|s| s.name == definition.stream)
                .expect("stream exists");
            let prefix = stream.subjects[0].trim_end_matches('>');
            for subject in &definition.config.filter_subjects {
                assert!(subject.starts_with(prefix), "{name}: {subject} outside {}", stream.name);
            }
        }
    }
}
