//! [`WebhookSecret`]: a Standard Webhooks signing secret, as the payment
//! provider signs with it and svc-payment checks with it.

use std::{fmt, str::FromStr};

use base64::Engine as _;
use rand::RngCore as _;

use crate::config::EnvReader;

/// A Standard Webhooks signing secret, `whsec_` and base64. `Debug` and
/// `Display` show `whsec_***`, so settings can be logged whole.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// A new secret of 24 random bytes, for a development or test stack.
    pub fn generate() -> Self {
        let mut key = [0u8; 24];
        rand::rng().fill_bytes(&mut key);
        Self(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ))
    }

    /// The secret: for signing, verifying and handing to a process, never
    /// for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The signer and verifier of this secret.
    pub fn signer(&self) -> standardwebhooks::Webhook {
        standardwebhooks::Webhook::new(&self.0).expect("a secret that decodes, as `from_str` checked")
    }

    /// The optional setting `key`. A bad value is reported without being
    /// echoed (the reader's own message would show it).
    pub fn read_optional(env: &mut EnvReader, key: &str) -> Option<Self> {
        let raw = env.optional::<String>(key, "whsec_ and a base64 key")?;
        match raw.trim().parse() {
            Ok(secret) => Some(secret),
            Err(why) => {
                env.problem(format!("{key} is invalid: {why}"));
                None
            }
        }
    }
}

impl FromStr for WebhookSecret {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        let Some(key) = raw.strip_prefix("whsec_") else {
            return Err("must start with whsec_".into());
        };
        if key.is_empty() || standardwebhooks::Webhook::new(raw).is_err() {
            return Err("whsec_ must be followed by a base64 key".into());
        }
        Ok(Self(raw.to_owned()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"whsec_***\"")
    }
}

impl fmt::Display for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("whsec_***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_parses_signs_and_never_shows() {
        let secret = WebhookSecret::generate();
        assert_ne!(secret, WebhookSecret::generate());
        let again: WebhookSecret = secret.expose().parse().expect("a valid secret");
        assert_eq!(again, secret);
        assert_eq!(format!("{secret} {secret:?}"), "whsec_*** \"whsec_***\"");
        let signature = secret.signer().sign("evt_1", 1, b"{}").expect("signs");
        assert!(signature.starts_with("v1,"), "{signature}");
    }

    #[test]
    fn a_bad_setting_is_reported_without_its_value() {
        let mut env = EnvReader::from_map([
            ("A", "hunter2"),
            ("B", "whsec_"),
            ("C", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ]);
        assert_eq!(WebhookSecret::read_optional(&mut env, "A"), None);
        assert_eq!(WebhookSecret::read_optional(&mut env, "B"), None);
        assert!(WebhookSecret::read_optional(&mut env, "C").is_some());
        assert_eq!(WebhookSecret::read_optional(&mut env, "UNSET"), None);
        let err = env.finish().expect_err("two bad secrets");
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
