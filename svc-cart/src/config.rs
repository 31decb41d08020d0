//! svc-cart settings.

use std::{sync::Arc, time::Duration};

use shop_catalog::CatalogSettings;
use shop_runtime::{
    config::{ConfigError, EnvReader, MessagingSettings, SecretUrl, ServiceBasics},
    identity::IdentityVerifier,
    registry,
    upstream::{Replicas, UpstreamSettings},
    values::Quantity,
};

/// svc-order refuses orders with more lines than this, so a cart may not
/// hold more either (its checkout could never succeed).
const ORDER_MAX_LINES: u32 = 100;

const MAX_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    /// `IDENTITY_VERIFYING_KEY_FILE`: the gateway's public key, which every
    /// caller's identity token must be signed with.
    pub identity: Arc<IdentityVerifier>,
    /// `REDIS_URL`, e.g. `redis://127.0.0.1:6379`.
    pub redis_url: SecretUrl,
    /// `NATS_URL` and `CONSUMER_CONCURRENCY`, for the `cart-orders` consumer.
    pub messaging: MessagingSettings,
    /// `CATALOG_URL` (svc-inventory), `CATALOG_CACHE_TTL`,
    /// `CATALOG_CACHE_CAPACITY`: the catalog and the copy kept of it.
    pub catalog: CatalogSettings,
    /// `ORDER_URL`: svc-order's replicas, for checkout.
    pub order: Replicas,
    /// `CART_TTL`: a cart untouched this long is gone (default 3d). Every
    /// change starts the period again; reads do not.
    pub cart_ttl: Duration,
    /// `CHECKOUT_TTL`: how long checkout records are kept (default 7d): the
    /// lines an order took, until its confirmation clears them, and the
    /// lines sent under each idempotency key, so a retry re-sends the same
    /// request. Must outlast the reservation deadline.
    pub checkout_ttl: Duration,
    /// `CART_MAX_LINES`: distinct SKUs per cart (default 50).
    pub max_lines: u32,
    /// `CART_MAX_QUANTITY`: units per line (default 99).
    pub max_quantity: i32,
    /// `UPSTREAM_TIMEOUT` (a catalog or svc-order call, at most 30s) and
    /// how replicas are reached (`UPSTREAM_CONNECT_TIMEOUT`, …).
    pub upstream: UpstreamSettings,
    /// `REDIS_TIMEOUT`: connect and response timeout of Redis commands
    /// (default 1s).
    pub redis_timeout: Duration,
}

impl shop_runtime::config::HasBasics for Config {
    fn basics(&self) -> &shop_runtime::config::ServiceBasics {
        &self.basics
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(EnvReader::from_process_env())
    }

    pub fn read(mut env: EnvReader) -> Result<Self, ConfigError> {
        let config = Self {
            basics: ServiceBasics::read(&mut env, &registry::CART),
            identity: IdentityVerifier::from_env(&mut env),
            redis_url: SecretUrl::new(
                env.required::<String>("REDIS_URL", "e.g. redis://127.0.0.1:6379")
                    .unwrap_or_default(),
            ),
            messaging: MessagingSettings::read(&mut env),
            catalog: CatalogSettings::read(&mut env),
            order: Replicas::read(&mut env, &registry::ORDER, "ORDER_URL"),
            cart_ttl: env.duration("CART_TTL", Duration::from_secs(3 * 24 * 3600)),
            checkout_ttl: env.duration("CHECKOUT_TTL", Duration::from_secs(7 * 24 * 3600)),
            max_lines: env.or("CART_MAX_LINES", 50, "a positive integer"),
            max_quantity: env.or("CART_MAX_QUANTITY", 99, "a positive integer"),
            upstream: UpstreamSettings::read(&mut env),
            redis_timeout: env.duration("REDIS_TIMEOUT", Duration::from_secs(1)),
        };
        config.check(&mut env);
        env.finish()?;
        Ok(config)
    }

    /// Problems only visible when settings are seen together or parsed.
    fn check(&self, env: &mut EnvReader) {
        if !self.redis_url.expose().is_empty() && redis::Client::open(self.redis_url.expose()).is_err() {
            env.problem(format!("REDIS_URL={} is not a Redis URL", self.redis_url));
        }
        // Redis expiries have millisecond resolution; zero would delete at once.
        for (key, value) in [
            ("CART_TTL", self.cart_ttl),
            ("CHECKOUT_TTL", self.checkout_ttl),
            ("REDIS_TIMEOUT", self.redis_timeout),
        ] {
            if value < Duration::from_millis(1) {
                env.problem(format!("{key} must be at least 1ms"));
            }
        }
        if !(1..=ORDER_MAX_LINES).contains(&self.max_lines) {
            env.problem(format!(
                "CART_MAX_LINES must be between 1 and {ORDER_MAX_LINES} (an order holds at most {ORDER_MAX_LINES} lines)"
            ));
        }
        if !(1..=Quantity::MAX).contains(&self.max_quantity) {
            env.problem(format!("CART_MAX_QUANTITY must be between 1 and {}", Quantity::MAX));
        }
        // A confirmation that overtakes its checkout record is retried while
        // the checkout is marked in flight, a window derived from this
        // timeout: a short bound keeps such a confirmation from waiting long.
        if self.upstream.timeout > MAX_UPSTREAM_TIMEOUT {
            env.problem(format!(
                "UPSTREAM_TIMEOUT must be at most {}s",
                MAX_UPSTREAM_TIMEOUT.as_secs()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_only_the_required_settings_are_given() {
        let key = shop_runtime::identity::throwaway_keys()
            .verifying
            .to_str()
            .expect("a UTF-8 path");
        let config = Config::read(EnvReader::from_map([
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("NATS_URL", "nats://127.0.0.1:4222"),
            (shop_runtime::identity::VERIFYING_KEY_FILE, key),
        ]))
        .expect("valid");
        assert_eq!(config.basics.grpc_addr.port(), 50054);
        assert_eq!(config.basics.admin_addr.port(), 9054);
        assert_eq!(config.cart_ttl, Duration::from_secs(259_200));
        assert_eq!((config.max_lines, config.max_quantity), (50, 99));
        assert_eq!(config.upstream.timeout, Duration::from_secs(2));
        assert_eq!(config.order.urls, "http://127.0.0.1:50051");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let err = Config::read(EnvReader::from_map([
            ("CART_TTL", "0s"),
            ("CART_MAX_LINES", "500"),
            ("CART_MAX_QUANTITY", "0"),
            ("ORDER_URL", "not a url"),
        ]))
        .expect_err("bad settings must fail");
        let text = err.to_string();
        for key in [
            "IDENTITY_VERIFYING_KEY_FILE",
            "REDIS_URL",
            "NATS_URL",
            "CART_TTL",
            "CART_MAX_LINES",
            "CART_MAX_QUANTITY",
            "ORDER_URL",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }
}
