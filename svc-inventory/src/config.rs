//! svc-inventory settings.

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
            identity: IdentityVerifier::from_env(&mut env),
            database: DatabaseSettings::read(&mut env),
            messaging: MessagingSettings::read(&mut env),
            reservation_ttl: env.positive_duration("RESERVATION_TTL", Duration::from_secs(15 * 60)),
            sweep_interval: env.positive_duration("RESERVATION_SWEEP_INTERVAL", Duration::from_secs(1)),
        };
        env.finish()?;
        Ok(config)
    }
}
