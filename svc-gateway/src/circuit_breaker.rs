//! A per-upstream circuit breaker.
//!
//! Closed: calls pass; `failure_threshold` consecutive failures (connect
//! errors, `UNAVAILABLE`, the gateway's deadline) open it. Open: calls are
//! refused at once, without touching the network, until the cool-down ends.
//! Half-open: exactly one probe call passes; its success closes the breaker,
//! its failure opens it for another cool-down. A probe whose caller goes away
//! without an outcome frees the slot for the next one.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::config::BreakerSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

/// How a call that the breaker let through ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered (whatever the answer).
    Success,
    /// The upstream could not be reached or did not answer in time.
    Failure,
    /// No verdict about the upstream (the caller gave up, or the gateway
    /// refused the request itself).
    Abandoned,
}

pub struct CircuitBreaker {
    upstream: &'static str,
    failure_threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

/// Permission for one call; report its outcome, or dropping it counts as
/// abandoned.
#[must_use]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl Permit<'_> {
    pub fn report(mut self, outcome: Outcome) {
        self.reported = true;
        self.breaker.record(self.probe, outcome, Instant::now());
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.record(self.probe, Outcome::Abandoned, Instant::now());
        }
    }
}

impl CircuitBreaker {
    pub fn new(upstream: &'static str, settings: BreakerSettings) -> Self {
        Self {
            upstream,
            failure_threshold: settings.failure_threshold.max(1),
            cool_down: settings.cool_down,
            state: Mutex::new(State::Closed {
                consecutive_failures: 0,
            }),
        }
    }

    /// A permit for one call, or `None` while the breaker is open.
    pub fn admit(&self) -> Option<Permit<'_>> {
        let probe = self.admit_at(Instant::now())?;
        Some(Permit {
            breaker: self,
            probe,
            reported: false,
        })
    }

    /// Whether calls are being refused right now.
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Some(is_probe)` when a call may go ahead.
    fn admit_at(&self, now: Instant) -> Option<bool> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Some(false),
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { probe_in_flight: true };
                tracing::info!(upstream = self.upstream, "circuit half-open: probing");
                Some(true)
            }
            State::Open { .. } | State::HalfOpen { probe_in_flight: true } => None,
            State::HalfOpen { probe_in_flight: false } => {
                *state = State::HalfOpen { probe_in_flight: true };
                Some(true)
            }
        }
    }

    fn record(&self, probe: bool, outcome: Outcome, now: Instant) {
        let mut state = self.lock();
        let open = State::Open {
            until: now + self.cool_down,
        };
        *state = match (*state, outcome) {
            (State::Closed { .. }, Outcome::Success) => State::Closed {
                consecutive_failures: 0,
            },
            (State::Closed { consecutive_failures }, Outcome::Failure) => {
                let failures = consecutive_failures + 1;
                if failures >= self.failure_threshold {
                    tracing::warn!(
                        upstream = self.upstream,
                        failures,
                        cool_down_ms = self.cool_down.as_millis() as u64,
                        "circuit opened: failing fast"
                    );
                    open
                } else {
                    State::Closed {
                        consecutive_failures: failures,
                    }
                }
            }
            (State::HalfOpen { .. }, Outcome::Success) if probe => {
                tracing::info!(upstream = self.upstream, "circuit closed: upstream answers again");
                State::Closed {
                    consecutive_failures: 0,
                }
            }
            (State::HalfOpen { .. }, Outcome::Failure) if probe => {
                tracing::warn!(upstream = self.upstream, "probe failed: circuit open again");
                open
            }
            (State::HalfOpen { .. }, Outcome::Abandoned) if probe => State::HalfOpen { probe_in_flight: false },
            // Late reports of calls admitted before the state changed, and
            // abandoned non-probe calls, change nothing.
            (current, _) => current,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, cool_down_ms: u64) -> CircuitBreaker {
        CircuitBreaker::new(
            "test",
            BreakerSettings {
                failure_threshold: threshold,
                cool_down: Duration::from_millis(cool_down_ms),
            },
        )
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(3, 1000);
        let t0 = Instant::now();
        for outcome in [
            Outcome::Failure,
            Outcome::Failure,
            Outcome::Success,
            Outcome::Failure,
            Outcome::Failure,
        ] {
            assert_eq!(b.admit_at(t0), Some(false));
            b.record(false, outcome, t0);
        }
        assert!(!b.is_open(), "a success in between resets the count");
        b.record(false, Outcome::Failure, t0);
        assert!(b.is_open());
        assert_eq!(b.admit_at(t0 + Duration::from_millis(999)), None);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_success_closes() {
        let b = breaker(1, 100);
        let t0 = Instant::now();
        b.record(false, Outcome::Failure, t0);
        let later = t0 + Duration::from_millis(100);
        assert_eq!(b.admit_at(later), Some(true), "the probe");
        assert_eq!(b.admit_at(later), None, "only one probe at a time");
        b.record(true, Outcome::Success, later);
        assert_eq!(b.admit_at(later), Some(false));
        assert!(!b.is_open());
    }

    #[test]
    fn a_failed_probe_opens_for_another_cool_down() {
        let b = breaker(1, 100);
        let t0 = Instant::now();
        b.record(false, Outcome::Failure, t0);
        let t1 = t0 + Duration::from_millis(150);
        assert_eq!(b.admit_at(t1), Some(true));
        b.record(true, Outcome::Failure, t1);
        assert_eq!(b.admit_at(t1 + Duration::from_millis(99)), None);
        assert_eq!(b.admit_at(t1 + Duration::from_millis(100)), Some(true));
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot_and_late_reports_change_nothing() {
        let b = breaker(1, 0);
        let t0 = Instant::now();
        b.record(false, Outcome::Failure, t0);
        {
            let permit = b.admit().expect("probe");
            assert!(permit.probe);
            // dropped without a report
        }
        let permit = b.admit().expect("next probe");
        // A call admitted before the breaker opened reports success late.
        b.record(false, Outcome::Success, Instant::now());
        assert!(b.is_open(), "only the probe may close it");
        permit.report(Outcome::Success);
        assert!(!b.is_open());
    }
}
