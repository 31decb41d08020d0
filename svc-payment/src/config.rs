//! svc-payment settings.

use std::time::Duration;

use shop_runtime::config::{ConfigError, EnvReader, ServiceSettings};

#[derive(Debug, Clone)]
pub struct Config {
    /// Basics, identity, database and messaging, as every such service
    /// reads them.
    pub service: ServiceSettings,
    /// `PAYMENT_PROVIDER_TIMEOUT`: deadline of one provider call (default 5s).
    pub provider_timeout: Duration,
    /// `PAYMENT_MAX_ATTEMPTS`: provider calls that timed out (each may or
    /// may not have charged) before the charge is voided and the payment
    /// failed (default 3). Calls the provider refused do not count: they
    /// are retried for as long as it stays away.
    pub max_attempts: u32,
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
            service: ServiceSettings::read(&mut env, &shop_runtime::registry::PAYMENT),
            provider_timeout: env.positive_duration("PAYMENT_PROVIDER_TIMEOUT", Duration::from_secs(5)),
            max_attempts: env.count("PAYMENT_MAX_ATTEMPTS", 3),
        };
        env.finish()?;
        Ok(config)
    }
}
