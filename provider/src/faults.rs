//! Fault knobs, set with `PUT /admin/faults` for chaos runs and tests: an
//! outage, slow answers, lost answers, and webhooks dropped, duplicated,
//! delayed or reordered. They live in memory only: a restart clears them.

use std::{sync::RwLock, time::Duration};

use axum::{
    extract::{Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::{api::ApiError, engine::Provider, serve::LoseAnswer};

/// The knobs; every one off by default. A `PUT` sets them all: a knob left
/// out is off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Every `/v1` call answers 503 and does nothing.
    pub outage: bool,
    /// Every `/v1` call acts at once, and answers this many milliseconds later.
    pub slow_ms: u64,
    /// The probability (0 to 1) that a `/v1` `POST` acts but its answer is
    /// lost: the connection closes without a response.
    pub lose_answers: f64,
    /// The probability (0 to 1) that a pending refund fails instead of
    /// succeeding: the bank sent the money back.
    pub refunds_fail: f64,
    pub webhooks: WebhookFaults,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookFaults {
    /// The probability that a delivery attempt is silently not sent (it
    /// counts as failed, and is retried).
    pub drop: f64,
    /// The probability that a delivered event is delivered once more.
    pub duplicate: f64,
    /// Each delivery waits this many milliseconds before its first attempt.
    pub delay_ms: u64,
    /// Each delivery waits a random while of up to a second more,
    /// so events close together arrive shuffled.
    pub reorder: bool,
}

/// The window within which `reorder` shuffles deliveries.
pub(crate) const REORDER_WINDOW: Duration = Duration::from_secs(1);

/// The longest `slow_ms` or `delay_ms`: ten minutes.
const LONGEST_MS: u64 = 600_000;

impl Faults {
    /// Everything off but `outage`: every `/v1` call refused.
    pub fn outage() -> Self {
        Self {
            outage: true,
            ..Self::default()
        }
    }

    /// The knob that is out of range, if one is.
    pub(crate) fn check(&self) -> Result<(), ApiError> {
        let probabilities = [
            ("lose_answers", self.lose_answers),
            ("refunds_fail", self.refunds_fail),
            ("webhooks.drop", self.webhooks.drop),
            ("webhooks.duplicate", self.webhooks.duplicate),
        ];
        for (knob, p) in probabilities {
            if !(0.0..=1.0).contains(&p) {
                return Err(ApiError::invalid(
                    "parameter_invalid",
                    format!("{knob} is a probability from 0 to 1, got {p}"),
                    Some(knob),
                ));
            }
        }
        for (knob, ms) in [("slow_ms", self.slow_ms), ("webhooks.delay_ms", self.webhooks.delay_ms)] {
            if ms > LONGEST_MS {
                return Err(ApiError::invalid(
                    "parameter_invalid",
                    format!("{knob} is at most {LONGEST_MS} (ten minutes), got {ms}"),
                    Some(knob),
                ));
            }
        }
        Ok(())
    }
}

/// The knobs as currently set, shared by the handlers and the deliveries.
#[derive(Debug, Default)]
pub(crate) struct Knobs(RwLock<Faults>);

impl Knobs {
    pub(crate) fn get(&self) -> Faults {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub(crate) fn set(&self, faults: Faults) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = faults;
    }
}

/// True with probability `p` (0 to 1).
pub(crate) fn chance(p: f64) -> bool {
    p > 0.0 && rand::rng().random_bool(p.min(1.0))
}

/// The `/v1` faults, around every `/v1` call.
pub(crate) async fn v1(State(provider): State<std::sync::Arc<Provider>>, request: Request, next: Next) -> Response {
    let faults = provider.faults.get();
    if faults.outage {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "api_error",
            code: "provider_outage",
            message: "The provider is down (fault knob `outage`); nothing was done.".into(),
            param: None,
        }
        .into_response();
    }
    let mutating = request.method() == Method::POST;
    let mut response = next.run(request).await;
    if faults.slow_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.slow_ms)).await;
    }
    if mutating && chance(faults.lose_answers) {
        response.extensions_mut().insert(LoseAnswer);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_read_as_json_with_everything_off_by_default() {
        let faults: Faults =
            serde_json::from_str(r#"{"lose_answers": 0.5, "webhooks": {"duplicate": 1}}"#).expect("partial knobs");
        assert_eq!(faults.lose_answers, 0.5);
        assert_eq!(faults.webhooks.duplicate, 1.0);
        assert!(!faults.outage && faults.webhooks.drop == 0.0);
        assert!(faults.check().is_ok());
        assert!(serde_json::from_str::<Faults>(r#"{"outgae": true}"#).is_err());
        let wrong = Faults {
            lose_answers: 1.5,
            ..Faults::default()
        };
        assert_eq!(wrong.check().err().and_then(|e| e.param), Some("lose_answers".into()));
        let wrong = Faults {
            slow_ms: LONGEST_MS + 1,
            ..Faults::default()
        };
        assert!(wrong.check().is_err());
    }

    #[test]
    fn chances_at_the_ends_are_certain() {
        assert!((0..100).all(|_| chance(1.0)));
        assert!((0..100).all(|_| !chance(0.0)));
    }
}
