//! svc-inventory settings.

use std::time::Duration;

use shop_runtime::config::{ConfigError, DatabaseSettings, EnvReader, MessagingSettings, ServiceBasics};

#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    pub database: DatabaseSettings,
    pub messaging: MessagingSettings,
    /// `RESERVATION_TTL`: how long stock is held for an order awaiting
    /// payment (default 15m).
    pub reservation_ttl: Duration,
    /// `RESERVATION_SWEEP_INTERVAL`: how often expired reservations are
    /// looked for (default 1s).
    pub sweep_interval: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(EnvReader::from_process_env())
    }

    pub fn read(mut env: EnvReader) -> Result<Self, ConfigError> {
        let config = Self {
            basics: ServiceBasics::read(&mut env, &shop_runtime::registry::INVENTORY),
            database: DatabaseSettings::read(&mut env),
            messaging: MessagingSettings::read(&mut env),
            reservation_ttl: env.positive_duration("RESERVATION_TTL", Duration::from_secs(15 * 60)),
            sweep_interval: env.positive_duration("RESERVATION_SWEEP_INTERVAL", Duration::from_secs(1)),
        };
        env.finish()?;
        Ok(config)
    }
}
