//! Webhooks: every event is POSTed to `PROVIDER_WEBHOOK_URL` (the body is
//! the event's JSON), signed per Standard Webhooks (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64>`; each attempt is
//! signed afresh, so a late retry still verifies), at least once: retried
//! with exponential backoff and jitter until a 2xx or the horizon.
//!
//! Each event is delivered by a task of its own, so one event's failing
//! endpoint answer never holds up another's, and the order they arrive in
//! is not guaranteed — as with a real provider. Which events are still owed
//! is in the journal: a restart sends them.

use std::{sync::Arc, time::Duration};

use rand::Rng as _;
use tokio::sync::Semaphore;

use crate::{
    config::WebhookSettings,
    domain::Event,
    engine::{Provider, now},
    faults::{REORDER_WINDOW, chance},
};

/// The longest wait between two attempts.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// One attempt's deadline, answer included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts in flight at once, over all events.
const IN_FLIGHT: usize = 32;

pub(crate) struct Webhooks {
    url: reqwest::Url,
    signer: standardwebhooks::Webhook,
    client: reqwest::Client,
    /// How long after its event (or its resend) a webhook is retried.
    pub(crate) horizon: Duration,
    first_retry: Duration,
    sending: Semaphore,
}

impl Webhooks {
    pub(crate) fn new(settings: &WebhookSettings, horizon: Duration, first_retry: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "webhook client: falling back to the default client");
                reqwest::Client::new()
            });
        Self {
            url: settings.url.clone(),
            signer: settings.secret.signer(),
            client,
            horizon,
            first_retry,
            sending: Semaphore::new(IN_FLIGHT),
        }
    }

    /// One attempt; `Err` says why it did not count as delivered.
    pub(crate) async fn attempt(&self, event: &Event) -> Result<(), String> {
        let body = serde_json::to_vec(event).map_err(|e| format!("cannot encode the event: {e}"))?;
        let _permit = self.sending.acquire().await.map_err(|e| e.to_string())?;
        // Signed as it leaves: the receiver checks the timestamp is recent.
        let timestamp = now();
        let signature = self
            .signer
            .sign(&event.id, timestamp, &body)
            .map_err(|e| format!("cannot sign: {e}"))?;
        let response = self
            .client
            .post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &event.id)
            .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", response.status()))
        }
    }
}

/// The wait after `failures` failed attempts (1 or more): the first retry
/// doubled for each failure after the first, at most [`MAX_RETRY`].
pub(crate) fn backoff(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    first.saturating_mul(1 << doublings).min(MAX_RETRY)
}

/// Somewhere between half and all of `wait`, so that retries of many
/// events do not arrive in lockstep.
fn jittered(wait: Duration) -> Duration {
    let half = wait / 2;
    half + half.mul_f64(rand::rng().random_range(0.0..=1.0))
}

/// Delivers `event` until an attempt gets a 2xx or `deadline` (Unix
/// seconds) passes, then records which in the journal.
pub(crate) async fn deliver(provider: Arc<Provider>, event: Event, deadline: i64) {
    let Some(hooks) = provider.webhooks.as_ref() else {
        return;
    };
    let shutdown = provider.shutdown.clone();
    let faults = provider.faults.get().webhooks;
    let mut hold = Duration::from_millis(faults.delay_ms);
    if faults.reorder {
        hold += REORDER_WINDOW.mul_f64(rand::rng().random_range(0.0..=1.0));
    }
    tokio::select! {
        () = tokio::time::sleep(hold) => {}
        () = shutdown.cancelled() => return,
    }
    let mut failures = 0;
    loop {
        let attempt = tokio::select! {
            attempt = async {
                if chance(provider.faults.get().webhooks.drop) {
                    Err("dropped (fault knob `drop`)".to_owned())
                } else {
                    hooks.attempt(&event).await
                }
            } => attempt,
            () = shutdown.cancelled() => return,
        };
        match attempt {
            Ok(()) => {
                tracing::debug!(event = %event.id, failures, "webhook delivered");
                provider.webhook_settled(&event.id, true).await;
                if chance(provider.faults.get().webhooks.duplicate) {
                    tokio::select! {
                        again = hooks.attempt(&event) => if let Err(why) = again {
                            tracing::info!(event = %event.id, %why, "duplicate webhook not delivered");
                        },
                        () = shutdown.cancelled() => {}
                    }
                }
                return;
            }
            Err(why) => {
                failures += 1;
                tracing::info!(event = %event.id, failures, %why, "webhook not delivered; will retry");
            }
        }
        let wait = jittered(backoff(hooks.first_retry, failures));
        if now() + i64::try_from(wait.as_secs()).unwrap_or(i64::MAX) > deadline {
            tracing::warn!(event = %event.id, failures, "webhook given up: no 2xx within the horizon");
            provider.webhook_settled(&event.id, false).await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_the_first_up_to_a_minute() {
        let first = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=9).map(|n| backoff(first, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(first, u32::MAX), MAX_RETRY);
        for _ in 0..100 {
            let wait = jittered(Duration::from_secs(8));
            assert!(
                (Duration::from_secs(4)..=Duration::from_secs(8)).contains(&wait),
                "{wait:?}"
            );
        }
    }
}
