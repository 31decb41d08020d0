//! svc-payment settings.

use std::{sync::Arc, time::Duration};

use shop_runtime::config::{ConfigError, DatabaseSettings, EnvReader, MessagingSettings, ServiceBasics};
use shop_runtime::identity::IdentityVerifier;

#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    /// `IDENTITY_VERIFYING_KEY_FILE`: the gateway's public key, which every
    /// caller's identity token must be signed with.
    pub identity: Arc<IdentityVerifier>,
    pub database: DatabaseSettings,
    pub messaging: MessagingSettings,
    /// `PAYMENT_PROVIDER_TIMEOUT`: deadline of one provider call (default 5s).
    pub provider_timeout: Duration,
    /// `PAYMENT_MAX_ATTEMPTS`: provider calls that timed out (each may or
    /// may not have charged) before the charge is voided and the payment
    /// failed (default 3). Calls the provider refused do not count: they
    /// are retried for as long as it stays away.
    pub max_attempts: u32,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(EnvReader::from_process_env())
    }

    pub fn read(mut env: EnvReader) -> Result<Self, ConfigError> {
        let config = Self {
            basics: ServiceBasics::read(&mut env, &shop_runtime::registry::PAYMENT),
            identity: IdentityVerifier::from_env(&mut env),
            database: DatabaseSettings::read(&mut env),
            messaging: MessagingSettings::read(&mut env),
            provider_timeout: env.positive_duration("PAYMENT_PROVIDER_TIMEOUT", Duration::from_secs(5)),
            max_attempts: env.count("PAYMENT_MAX_ATTEMPTS", 3),
        };
        env.finish()?;
        Ok(config)
    }
}
