//! svc-payment settings.

use std::time::Duration;

use shop_runtime::config::{ConfigError, EnvReader, MessagingSettings, ServiceBasics};

#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    pub messaging: MessagingSettings,
    /// `PAYMENT_PROVIDER_TIMEOUT`: deadline of one provider call (default 5s).
    pub provider_timeout: Duration,
    /// `PAYMENT_MAX_ATTEMPTS`: provider calls that timed out (each may or
    /// may not have charged) before the charge is voided and the payment
    /// failed (default 3). Calls the provider refused do not count: they
    /// are retried for as long as it stays away.
    pub max_attempts: i32,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(EnvReader::from_process_env())
    }

    pub fn read(mut env: EnvReader) -> Result<Self, ConfigError> {
        let config = Self {
            basics: ServiceBasics::read(
                &mut env,
                shop_runtime::registry::PAYMENT.grpc_port,
                shop_runtime::registry::PAYMENT.admin_port,
            ),
            messaging: MessagingSettings::read(&mut env),
            provider_timeout: env.duration("PAYMENT_PROVIDER_TIMEOUT", Duration::from_secs(5)),
            max_attempts: env.or("PAYMENT_MAX_ATTEMPTS", 3, "a positive integer"),
        };
        if config.max_attempts < 1 {
            env.problem(format!(
                "PAYMENT_MAX_ATTEMPTS={} must be at least 1",
                config.max_attempts
            ));
        }
        if config.provider_timeout.is_zero() {
            env.problem("PAYMENT_PROVIDER_TIMEOUT must be longer than 0s");
        }
        env.finish()?;
        Ok(config)
    }
}
