//! svc-order settings.

use std::time::Duration;

use shop_catalog::CatalogSettings;
use shop_runtime::{
    config::{ConfigError, EnvReader, ServiceSettings},
    registry,
    upstream::UpstreamSettings,
};

use crate::{domain::PaymentMethod, watch::WatchLimits};

/// `ORDER_DEADLINE` when unset: well under the reservation TTL (15 min), so
/// a stuck order is settled by its owner, and the expiry stays the backstop.
pub const DEFAULT_ORDER_DEADLINE: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone)]
pub struct Config {
    /// Basics, identity, database and messaging, as every such service
    /// reads them.
    pub service: ServiceSettings,
    /// `CATALOG_URL` (svc-inventory), `CATALOG_CACHE_TTL`,
    /// `CATALOG_CACHE_CAPACITY`: the catalog and the copy kept of it.
    pub catalog: CatalogSettings,
    /// `UPSTREAM_TIMEOUT` (a catalog call), `UPSTREAM_CONNECT_TIMEOUT`,
    /// `UPSTREAM_BREAKER_*`: the same settings as every caller's.
    pub upstream: UpstreamSettings,
    /// `ACCEPTED_PAYMENT_METHODS`: comma-separated tokens PlaceOrder accepts.
    pub accepted_payment_methods: Vec<PaymentMethod>,
    /// `WATCH_MAX_CONCURRENT`: WatchOrder streams one replica serves at once
    /// (default 1000), and `WATCH_MAX_PER_USER`: of one user (default 10);
    /// more are refused with RESOURCE_EXHAUSTED.
    pub watch_limits: WatchLimits,
    /// `ORDER_DEADLINE`: an order not settled this long after it was placed
    /// is cancelled `TIMED_OUT` ([`DEFAULT_ORDER_DEADLINE`]; keep it under
    /// svc-inventory's `RESERVATION_TTL`, so that the order's owner decides
    /// and the reservation's expiry stays the backstop).
    pub order_deadline: Duration,
    /// `ORDER_DEADLINE_SWEEP_INTERVAL`: how often overdue orders are looked
    /// for (default 30s).
    pub deadline_sweep_interval: Duration,
}

impl shop_runtime::config::HasBasics for Config {
    fn basics(&self) -> &shop_runtime::config::ServiceBasics {
        self.service.basics()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(EnvReader::from_process_env())
    }

    pub fn read(mut env: EnvReader) -> Result<Self, ConfigError> {
        let methods: String = env.or(
            "ACCEPTED_PAYMENT_METHODS",
            "pm_card_ok,pm_card_declined,pm_card_timeout,pm_card_3ds,pm_card_async,pm_card_async_declined".to_owned(),
            "",
        );
        let mut accepted_payment_methods = Vec::new();
        for token in methods.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match token.parse() {
                Ok(m) => accepted_payment_methods.push(m),
                Err(e) => env.problem(format!("ACCEPTED_PAYMENT_METHODS: {e}")),
            }
        }
        if accepted_payment_methods.is_empty() {
            env.problem("ACCEPTED_PAYMENT_METHODS must list at least one payment method");
        }
        let config = Self {
            service: ServiceSettings::read(&mut env, &registry::ORDER),
            catalog: CatalogSettings::read(&mut env),
            upstream: UpstreamSettings::read(&mut env),
            accepted_payment_methods,
            watch_limits: WatchLimits {
                per_replica: env.count("WATCH_MAX_CONCURRENT", 1000),
                per_user: env.count("WATCH_MAX_PER_USER", 10),
            },
            order_deadline: env.positive_duration("ORDER_DEADLINE", DEFAULT_ORDER_DEADLINE),
            deadline_sweep_interval: env.positive_duration("ORDER_DEADLINE_SWEEP_INTERVAL", Duration::from_secs(30)),
        };
        env.finish()?;
        Ok(config)
    }
}
