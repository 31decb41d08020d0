//! svc-payment settings.

use std::time::Duration;

use reqwest::Url;
use shop_runtime::{
    config::{ConfigError, EnvReader, ServiceSettings},
    webhook_secret::WebhookSecret,
};

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
    /// `PAYMENT_PROVIDER_URL`: the payment provider's HTTP API (default
    /// `http://127.0.0.1:12111`, where the `payment-provider` emulator
    /// listens).
    pub provider_url: Url,
    /// `PAYMENT_WEBHOOK_SECRET`, then `PAYMENT_WEBHOOK_PREVIOUS_SECRET`:
    /// the secrets a provider webhook's signature may verify against (the
    /// previous one while a rotation is under way). None: every webhook
    /// is refused, and reconciliation alone settles payments.
    pub webhook_secrets: Vec<WebhookSecret>,
    /// `PAYMENT_RECONCILE_INTERVAL`: how often the provider's event list is
    /// read for what no webhook brought (default 30s).
    pub reconcile_interval: Duration,
    /// `PAYMENT_RETURN_URL`: where a customer lands after authenticating a
    /// charge at the provider, `{order_id}` replaced (e.g.
    /// `http://127.0.0.1:8080/#/orders/{order_id}`, the storefront's page
    /// of the order). Unset: the provider's page says the outcome itself.
    pub return_url: Option<String>,
}

/// The emulator where it listens unless told otherwise.
fn emulator_url() -> Url {
    let port = shop_runtime::registry::PAYMENT_PROVIDER_PORT;
    Url::parse(&format!("http://127.0.0.1:{port}")).expect("a valid URL")
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
        let provider_url: Url = env.or("PAYMENT_PROVIDER_URL", emulator_url(), "e.g. http://127.0.0.1:12111");
        if !matches!(provider_url.scheme(), "http" | "https") {
            env.problem(format!(
                "PAYMENT_PROVIDER_URL={provider_url} is not an http(s) URL (e.g. http://127.0.0.1:12111)"
            ));
        }
        let return_url: Option<String> =
            env.optional("PAYMENT_RETURN_URL", "e.g. http://127.0.0.1:8080/#/orders/{order_id}");
        if let Some(url) = &return_url
            && !Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            env.problem(format!(
                "PAYMENT_RETURN_URL={url:?} is not an http(s) URL (e.g. http://127.0.0.1:8080/#/orders/{{order_id}})"
            ));
        }
        let config = Self {
            service: ServiceSettings::read(&mut env, &shop_runtime::registry::PAYMENT),
            provider_timeout: env.positive_duration("PAYMENT_PROVIDER_TIMEOUT", Duration::from_secs(5)),
            max_attempts: env.count("PAYMENT_MAX_ATTEMPTS", 3),
            provider_url,
            webhook_secrets: ["PAYMENT_WEBHOOK_SECRET", "PAYMENT_WEBHOOK_PREVIOUS_SECRET"]
                .into_iter()
                .filter_map(|key| WebhookSecret::read_optional(&mut env, key))
                .collect(),
            reconcile_interval: env.positive_duration("PAYMENT_RECONCILE_INTERVAL", Duration::from_secs(30)),
            return_url,
        };
        env.finish()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, String)> {
        vec![
            ("NATS_URL", "nats://127.0.0.1:4222".into()),
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/shop_payment".into()),
            (
                shop_runtime::identity::VERIFYING_KEY_FILE,
                shop_runtime::identity::throwaway_keys().verifying.display().to_string(),
            ),
        ]
    }

    #[test]
    fn by_default_it_charges_through_the_emulator_and_refuses_every_webhook() {
        let config = Config::read(EnvReader::from_map(base())).expect("valid");
        assert_eq!(config.provider_url.as_str(), "http://127.0.0.1:12111/");
        assert_eq!(config.provider_timeout, Duration::from_secs(5));
        assert!(config.webhook_secrets.is_empty());
        assert_eq!(config.reconcile_interval, Duration::from_secs(30));
    }

    #[test]
    fn reads_both_webhook_secrets_in_order_and_never_shows_them() {
        let (current, previous) = (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        );
        let mut env = base();
        env.extend([
            ("PAYMENT_WEBHOOK_SECRET", current.into()),
            ("PAYMENT_WEBHOOK_PREVIOUS_SECRET", previous.into()),
            ("PAYMENT_RECONCILE_INTERVAL", "500ms".into()),
        ]);
        let config = Config::read(EnvReader::from_map(env)).expect("valid");
        let secrets: Vec<&str> = config.webhook_secrets.iter().map(WebhookSecret::expose).collect();
        assert_eq!(secrets, [current, previous]);
        assert_eq!(config.reconcile_interval, Duration::from_millis(500));
        let logged = format!("{config:?}");
        assert!(!logged.contains("MfKQ9r8") && !logged.contains("C2FVsBQ"), "{logged}");
        assert!(logged.contains("whsec_***"), "{logged}");

        // The previous one alone: a rotation's last step, or a slip.
        let mut env = base();
        env.push(("PAYMENT_WEBHOOK_PREVIOUS_SECRET", previous.into()));
        let config = Config::read(EnvReader::from_map(env)).expect("valid");
        assert_eq!(config.webhook_secrets.len(), 1);
    }

    #[test]
    fn reads_the_provider_url() {
        let mut env = base();
        env.push(("PAYMENT_PROVIDER_URL", "https://payments.example/api".into()));
        let config = Config::read(EnvReader::from_map(env)).expect("valid");
        assert_eq!(config.provider_url.as_str(), "https://payments.example/api");
    }

    #[test]
    fn reports_every_problem_at_once() {
        for url in ["ftp://127.0.0.1:12111", "127.0.0.1:12111", "not a url"] {
            let mut env = base();
            env.extend([
                ("PAYMENT_PROVIDER_URL", url.into()),
                ("PAYMENT_PROVIDER_TIMEOUT", "0s".into()),
                ("PAYMENT_MAX_ATTEMPTS", "none".into()),
                ("PAYMENT_WEBHOOK_SECRET", "hunter2".into()),
                ("PAYMENT_WEBHOOK_PREVIOUS_SECRET", "whsec_".into()),
                ("PAYMENT_RECONCILE_INTERVAL", "0s".into()),
            ]);
            let err = Config::read(EnvReader::from_map(env)).expect_err("bad settings");
            let text = err.to_string();
            for key in [
                "PAYMENT_PROVIDER_URL",
                "PAYMENT_PROVIDER_TIMEOUT",
                "PAYMENT_MAX_ATTEMPTS",
                "PAYMENT_WEBHOOK_SECRET",
                "PAYMENT_WEBHOOK_PREVIOUS_SECRET",
                "PAYMENT_RECONCILE_INTERVAL",
            ] {
                assert!(text.contains(key), "{key} missing from {text}");
            }
            assert!(!text.contains("hunter2"), "a bad secret is not echoed: {text}");
            assert_eq!(err.problems.len(), 6, "{url}: {text}");
        }
    }

    #[test]
    fn reads_where_customers_return_and_refuses_what_is_no_url() {
        let mut env = base();
        env.push(("PAYMENT_RETURN_URL", "http://127.0.0.1:8080/#/orders/{order_id}".into()));
        let config = Config::read(EnvReader::from_map(env)).expect("valid");
        assert_eq!(
            config.return_url.as_deref(),
            Some("http://127.0.0.1:8080/#/orders/{order_id}")
        );
        let mut env = base();
        env.push(("PAYMENT_RETURN_URL", "/orders/{order_id}".into()));
        let err = Config::read(EnvReader::from_map(env)).expect_err("not a URL");
        assert!(err.to_string().contains("PAYMENT_RETURN_URL"), "{err}");
    }
}
