//! The provider's settings, from the environment (`PROVIDER_*`), every
//! problem reported at once.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use shop_runtime::{
    config::{ConfigError, EnvReader, LogFormat},
    telemetry::TracingSettings,
    webhook_secret::WebhookSecret,
};

#[derive(Debug, Clone)]
pub struct Config {
    /// `PROVIDER_LISTEN_ADDR` (default `127.0.0.1:12111`): the API, the
    /// 3-D Secure pages and `/admin`, on one port.
    pub listen_addr: SocketAddr,
    /// `PROVIDER_PUBLIC_URL`: the base of the links it hands out (the 3-D
    /// Secure page), as a browser reaches it. `None`: `http://` and the
    /// address it listens on.
    pub public_url: Option<String>,
    /// `PROVIDER_WEBHOOK_URL` and `PROVIDER_WEBHOOK_SECRET`: where events
    /// are POSTed, signed. `None`: no webhooks (events are still listed).
    pub webhook: Option<WebhookSettings>,
    /// `PROVIDER_DATA_DIR` (default `.data/payment-provider`): where the
    /// journal lives.
    pub data_dir: PathBuf,
    /// `PROVIDER_ASYNC_DELAY` (default 3s): how long `processing` lasts, and
    /// how long a refund stays `pending`.
    pub async_delay: Duration,
    /// `PROVIDER_WEBHOOK_HORIZON` (default 1h): how long after an event its
    /// webhook is retried before it is given up.
    pub webhook_horizon: Duration,
    /// `PROVIDER_WEBHOOK_RETRY` (default 1s): the wait after a webhook's
    /// first failed attempt; it doubles after each, up to a minute.
    pub webhook_first_retry: Duration,
    /// `LOG_FORMAT`: `auto` (default), `text` or `json`.
    pub log_format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER_ARG`.
    pub tracing: TracingSettings,
}

/// Where webhooks go and the key they are signed with.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: reqwest::Url,
    pub secret: WebhookSecret,
}

pub const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    shop_runtime::registry::PAYMENT_PROVIDER_PORT,
);

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(EnvReader::from_process_env())
    }

    pub fn read(mut env: EnvReader) -> Result<Self, ConfigError> {
        let public_url: Option<String> = env.optional("PROVIDER_PUBLIC_URL", "e.g. http://127.0.0.1:12111");
        if let Some(url) = &public_url
            && !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            env.problem(format!(
                "PROVIDER_PUBLIC_URL={url:?} is not an http(s) URL (e.g. http://127.0.0.1:12111)"
            ));
        }
        let webhook_url: Option<reqwest::Url> =
            env.optional("PROVIDER_WEBHOOK_URL", "e.g. http://127.0.0.1:8080/webhooks/payments");
        if let Some(url) = &webhook_url
            && !matches!(url.scheme(), "http" | "https")
        {
            env.problem(format!("PROVIDER_WEBHOOK_URL={url} is not an http(s) URL"));
        }
        let secret = WebhookSecret::read_optional(&mut env, "PROVIDER_WEBHOOK_SECRET");
        let webhook = match (webhook_url, secret) {
            (Some(url), Some(secret)) => Some(WebhookSettings { url, secret }),
            (Some(_), None) => {
                env.problem(
                    "PROVIDER_WEBHOOK_SECRET is not set (required with PROVIDER_WEBHOOK_URL: whsec_ and a base64 key)",
                );
                None
            }
            (None, _) => None,
        };
        let config = Self {
            listen_addr: env.socket_addr("PROVIDER_LISTEN_ADDR", DEFAULT_LISTEN_ADDR),
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
            webhook,
            data_dir: env.path("PROVIDER_DATA_DIR", ".data/payment-provider"),
            async_delay: env.positive_duration("PROVIDER_ASYNC_DELAY", Duration::from_secs(3)),
            webhook_horizon: env.positive_duration("PROVIDER_WEBHOOK_HORIZON", Duration::from_secs(3600)),
            webhook_first_retry: env.positive_duration("PROVIDER_WEBHOOK_RETRY", Duration::from_secs(1)),
            log_format: env.or("LOG_FORMAT", LogFormat::Auto, "auto, text or json"),
            tracing: TracingSettings::read(&mut env),
        };
        env.finish()?;
        Ok(config)
    }

    /// The defaults, keeping the journal in `data_dir`: for tests and
    /// embedding.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen_addr: DEFAULT_LISTEN_ADDR,
            public_url: None,
            webhook: None,
            data_dir: data_dir.into(),
            async_delay: Duration::from_secs(3),
            webhook_horizon: Duration::from_secs(3600),
            webhook_first_retry: Duration::from_secs(1),
            log_format: LogFormat::Auto,
            tracing: TracingSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn defaults() {
        let config = Config::read(EnvReader::from_map([("X", "y")])).expect("valid");
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:12111");
        assert_eq!(config.public_url, None);
        assert!(config.webhook.is_none());
        assert_eq!(config.async_delay, Duration::from_secs(3));
        assert_eq!(config.webhook_horizon, Duration::from_secs(3600));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let err = Config::read(EnvReader::from_map([
            ("PROVIDER_LISTEN_ADDR", "nowhere"),
            ("PROVIDER_PUBLIC_URL", "ftp://x"),
            ("PROVIDER_WEBHOOK_URL", "http://127.0.0.1:9/hooks"),
            ("PROVIDER_ASYNC_DELAY", "soon"),
            ("PROVIDER_WEBHOOK_HORIZON", "0s"),
        ]))
        .expect_err("bad settings");
        let text = err.to_string();
        for key in [
            "PROVIDER_LISTEN_ADDR",
            "PROVIDER_PUBLIC_URL",
            "PROVIDER_WEBHOOK_SECRET",
            "PROVIDER_ASYNC_DELAY",
            "PROVIDER_WEBHOOK_HORIZON",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
        assert_eq!(err.problems.len(), 5, "{text}");
        let err = Config::read(EnvReader::from_map([
            ("PROVIDER_WEBHOOK_URL", "http://127.0.0.1:9/hooks"),
            ("PROVIDER_WEBHOOK_SECRET", "hunter2"),
        ]))
        .expect_err("not a whsec_ secret");
        assert!(err.to_string().contains("PROVIDER_WEBHOOK_SECRET"), "{err}");
        assert!(
            !err.to_string().contains("hunter2"),
            "the bad value is not echoed: {err}"
        );
    }

    #[test]
    fn the_secret_never_shows_in_logs() {
        let config = Config::read(EnvReader::from_map([
            ("PROVIDER_WEBHOOK_URL", "http://127.0.0.1:9/hooks"),
            ("PROVIDER_WEBHOOK_SECRET", SECRET),
            ("PROVIDER_PUBLIC_URL", "http://payments.test:12111/"),
        ]))
        .expect("valid");
        let logged = format!("{config:?}");
        assert!(!logged.contains("MfKQ9r8"), "{logged}");
        assert!(logged.contains("whsec_***"), "{logged}");
        let webhook = config.webhook.expect("configured");
        assert_eq!(webhook.secret.expose(), SECRET);
        assert_eq!(config.public_url.as_deref(), Some("http://payments.test:12111"));
        let signature = webhook.secret.signer().sign("evt_1", 1, b"{}").expect("signs");
        assert!(signature.starts_with("v1,"), "{signature}");
    }
}
