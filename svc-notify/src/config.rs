//! svc-notify settings.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use lettre::{Address, message::Mailbox};
use shop_runtime::config::{ConfigError, EnvReader, ServiceSettings};

#[derive(Debug, Clone)]
pub struct Config {
    /// Basics, identity, database and messaging, as every such service
    /// reads them.
    pub service: ServiceSettings,
    /// `NOTIFY_DATA_DIR` (default `.data/notify`): without an SMTP relay,
    /// emails are written as `.eml` files under `<dir>/outbox-mail/`.
    pub data_dir: PathBuf,
    /// `NOTIFY_SMTP_URL`, e.g. `smtp://127.0.0.1:2525`: send through this
    /// relay instead of writing files.
    pub smtp: Option<SmtpRelay>,
    /// `NOTIFY_RECIPIENT_DOMAIN` (default `customers.shop.test`).
    pub recipient_domain: String,
    /// `NOTIFY_FROM` (default `orders@shop.test`), a bare address or
    /// `Name <address>`.
    pub from: Mailbox,
    /// `NOTIFY_RESEND_INTERVAL` (default 5s): how often unsent emails are
    /// looked for, and the first back-off after a failed send.
    pub resend_interval: Duration,
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
            service: ServiceSettings::read(&mut env, &shop_runtime::registry::NOTIFY),
            data_dir: env.path("NOTIFY_DATA_DIR", ".data/notify"),
            smtp: env.optional("NOTIFY_SMTP_URL", "e.g. smtp://127.0.0.1:2525"),
            recipient_domain: env.or(
                "NOTIFY_RECIPIENT_DOMAIN",
                "customers.shop.test".to_owned(),
                "a mail domain, e.g. customers.shop.test",
            ),
            from: env
                .optional(
                    "NOTIFY_FROM",
                    "an address such as orders@shop.test or \"Shop <orders@shop.test>\"",
                )
                .unwrap_or_else(|| Mailbox::new(None, Address::new_dangerous("orders", "shop.test"))),
            resend_interval: env.positive_duration("NOTIFY_RESEND_INTERVAL", Duration::from_secs(5)),
        };
        if Address::new("probe", &config.recipient_domain).is_err() {
            env.problem(format!(
                "NOTIFY_RECIPIENT_DOMAIN={:?} is not a mail domain (e.g. customers.shop.test)",
                config.recipient_domain
            ));
        }
        env.finish()?;
        Ok(config)
    }

    /// Where the file sender writes its `.eml` files.
    pub fn mail_dir(&self) -> PathBuf {
        self.data_dir.join("outbox-mail")
    }
}

/// A plain-text SMTP relay, `smtp://host[:port]` (port 25 by default).
/// TLS and authentication are not supported: the relay is expected on the
/// local network and does both onwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpRelay {
    pub host: String,
    pub port: u16,
}

impl FromStr for SmtpRelay {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let Some(rest) = raw.strip_prefix("smtp://") else {
            return Err("only plain smtp://host:port is supported (no smtps or TLS)".into());
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['@', '/', '?', '#']) {
            return Err("credentials, paths and query parameters are not supported".into());
        }
        // `[::1]:2525` keeps the colons of an IPv6 host apart from the port.
        let (host, port) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed.split_once(']').ok_or("unclosed '[' in the host")?;
                (host, after.strip_prefix(':'))
            }
            None => match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            },
        };
        if host.is_empty() {
            return Err("the host is missing".into());
        }
        let port = match port {
            None => 25,
            Some(p) => p
                .parse()
                .map_err(|_| format!("port {p:?} is not a number between 1 and 65535"))?,
        };
        if port == 0 {
            return Err("port 0 is not a relay port".into());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for SmtpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "smtp://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "smtp://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("NATS_URL", "nats://127.0.0.1:4222"),
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/shop_notify"),
            (
                shop_runtime::identity::VERIFYING_KEY_FILE,
                shop_runtime::identity::throwaway_keys()
                    .verifying
                    .to_str()
                    .expect("a UTF-8 path"),
            ),
        ]
    }

    #[test]
    fn defaults() {
        let config = Config::read(EnvReader::from_map(base())).expect("valid");
        assert_eq!(config.service.basics.grpc_addr.port(), 50055);
        assert_eq!(config.service.basics.admin_addr.port(), 9055);
        assert_eq!(config.mail_dir(), PathBuf::from(".data/notify/outbox-mail"));
        assert_eq!(config.smtp, None);
        assert_eq!(config.recipient_domain, "customers.shop.test");
        assert_eq!(config.from.email.to_string(), "orders@shop.test");
        assert_eq!(config.resend_interval, Duration::from_secs(5));
    }

    #[test]
    fn reads_smtp_relay_and_sender() {
        let mut env = base();
        env.extend([
            ("NOTIFY_SMTP_URL", "smtp://127.0.0.1:2525"),
            ("NOTIFY_FROM", "Shop <shop@example.org>"),
        ]);
        let config = Config::read(EnvReader::from_map(env)).expect("valid");
        assert_eq!(
            config.smtp,
            Some(SmtpRelay {
                host: "127.0.0.1".into(),
                port: 2525
            })
        );
        assert_eq!(config.from.name.as_deref(), Some("Shop"));
        assert_eq!(config.from.email.to_string(), "shop@example.org");
    }

    #[test]
    fn reports_every_bad_setting() {
        let mut env = base();
        env.extend([
            ("NOTIFY_SMTP_URL", "smtps://relay:465"),
            ("NOTIFY_FROM", "not an address"),
            ("NOTIFY_RECIPIENT_DOMAIN", "bad domain"),
            ("NOTIFY_RESEND_INTERVAL", "0s"),
        ]);
        let err = Config::read(EnvReader::from_map(env)).expect_err("bad settings must fail");
        let text = err.to_string();
        for key in [
            "NOTIFY_SMTP_URL",
            "NOTIFY_FROM",
            "NOTIFY_RECIPIENT_DOMAIN",
            "NOTIFY_RESEND_INTERVAL",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
        assert_eq!(err.problems.len(), 4, "{text}");
    }

    #[test]
    fn smtp_urls() {
        let relay = |raw: &str| raw.parse::<SmtpRelay>();
        assert_eq!(
            relay("smtp://mail.local"),
            Ok(SmtpRelay {
                host: "mail.local".into(),
                port: 25
            })
        );
        assert_eq!(
            relay("smtp://mail.local:2525/"),
            Ok(SmtpRelay {
                host: "mail.local".into(),
                port: 2525
            })
        );
        assert_eq!(
            relay("smtp://[::1]:2525"),
            Ok(SmtpRelay {
                host: "::1".into(),
                port: 2525
            })
        );
        assert_eq!(relay("smtp://[::1]").map(|r| r.port), Ok(25));
        assert_eq!(
            relay("smtp://[::1]:2525").map(|r| r.to_string()).as_deref(),
            Ok("smtp://[::1]:2525")
        );
        assert!(relay("smtps://mail.local").is_err());
        assert!(relay("smtp://user:pw@mail.local").is_err());
        assert!(relay("smtp://").is_err());
        assert!(relay("smtp://mail.local:0").is_err());
        assert!(relay("smtp://mail.local:http").is_err());
        assert!(relay("127.0.0.1:25").is_err());
    }
}
