//! svc-inventory settings.

use std::time::Duration;

use shop_runtime::config::{ConfigError, EnvReader, ServiceSettings};

#[derive(Debug, Clone)]
pub struct Config {
    /// Basics, identity, database and messaging, as every such service
    /// reads them.
    pub service: ServiceSettings,
    /// `RESERVATION_TTL`: how long stock is held for an order awaiting
    /// payment (default 15m).
    pub reservation_ttl: Duration,
    /// `RESERVATION_SWEEP_INTERVAL`: how often expired reservations are
    /// looked for (default 1s).
    pub sweep_interval: Duration,
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
        let config = Self {
            service: ServiceSettings::read(&mut env, &shop_runtime::registry::INVENTORY),
            reservation_ttl: env.positive_duration("RESERVATION_TTL", Duration::from_secs(15 * 60)),
            sweep_interval: env.positive_duration("RESERVATION_SWEEP_INTERVAL", Duration::from_secs(1)),
        };
        env.finish()?;
        Ok(config)
    }
}
