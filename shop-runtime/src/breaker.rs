//! A small circuit breaker per upstream, so a dead dependency costs
//! callers microseconds instead of a connect attempt or a deadline each.
//!
//! Closed: calls pass; `failures` consecutive failures open it. Open: calls
//! are refused until the cool-down ends. Half-open: one probe passes (the
//! others are still refused); its success closes the breaker, its failure
//! opens it for another cool-down.

use std::{
    future::Future,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tonic::{Code, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The breaker refused the call without trying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOpen;

pub struct CircuitBreaker {
    upstream: &'static str,
    failures: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

impl CircuitBreaker {
    pub fn new(upstream: &'static str, failures: u32, cool_down: Duration) -> Self {
        metrics::gauge!("upstream_breaker_open", "upstream" => upstream).set(0.0);
        Self {
            upstream,
            failures: failures.max(1),
            cool_down,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Runs `call` unless the breaker is open. Only statuses saying the
    /// upstream itself is unwell count as failures; an answer such as
    /// NOT_FOUND or INVALID_ARGUMENT proves it is healthy.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<Result<T, Status>, BreakerOpen> {
        let probe = self.admit()?;
        // Clears the probe flag if this future is dropped mid-call, so the
        // breaker cannot stay half-open with no probe ever finishing.
        let mut guard = ProbeGuard {
            breaker: self,
            armed: probe,
        };
        let result = call.await;
        guard.armed = false;
        let healthy = match &result {
            Ok(_) => true,
            Err(status) => !is_upstream_failure(status),
        };
        self.settle(healthy);
        Ok(result)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain value, consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go out; `Ok(true)` for the half-open probe.
    fn admit(&self) -> Result<bool, BreakerOpen> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(false),
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen { probing: true };
                tracing::info!(upstream = self.upstream, "circuit breaker half-open; probing");
                Ok(true)
            }
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok(true)
            }
            State::Open { .. } | State::HalfOpen { probing: true } => Err(BreakerOpen),
        }
    }

    fn settle(&self, healthy: bool) {
        let mut state = self.lock();
        let next = match (*state, healthy) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.failures => {
                State::Closed { failures: failures + 1 }
            }
            (State::Open { until }, false) => State::Open { until },
            (State::Closed { .. } | State::HalfOpen { .. }, false) => State::Open {
                until: Instant::now() + self.cool_down,
            },
        };
        let was_open = !matches!(*state, State::Closed { .. });
        let is_open = !matches!(next, State::Closed { .. });
        if was_open != is_open {
            if is_open {
                tracing::warn!(upstream = self.upstream, cool_down = ?self.cool_down, "circuit breaker open");
            } else {
                tracing::info!(upstream = self.upstream, "circuit breaker closed");
            }
            metrics::gauge!("upstream_breaker_open", "upstream" => self.upstream).set(if is_open { 1.0 } else { 0.0 });
        }
        *state = next;
    }
}

struct ProbeGuard<'a> {
    breaker: &'a CircuitBreaker,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.breaker.lock();
            if *state == (State::HalfOpen { probing: true }) {
                *state = State::HalfOpen { probing: false };
            }
        }
    }
}

/// Statuses that mean the upstream (or the way to it) is failing.
fn is_upstream_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal | Code::Cancelled
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `"refused"` (not tried), `"ok"` or the failed call's code.
    fn outcome(result: Result<Result<(), Status>, BreakerOpen>) -> String {
        match result {
            Err(BreakerOpen) => "refused".into(),
            Ok(Ok(())) => "ok".into(),
            Ok(Err(status)) => format!("{:?}", status.code()),
        }
    }

    async fn fail(breaker: &CircuitBreaker) -> String {
        outcome(breaker.call(async { Err::<(), _>(Status::unavailable("down")) }).await)
    }

    async fn succeed(breaker: &CircuitBreaker) -> String {
        outcome(breaker.call(async { Ok(()) }).await)
    }

    #[tokio::test]
    async fn opens_after_consecutive_failures_and_closes_after_a_successful_probe() {
        let breaker = CircuitBreaker::new("test", 3, Duration::from_millis(50));
        for _ in 0..3 {
            assert_eq!(fail(&breaker).await, "Unavailable", "closed: the call is tried");
        }
        assert_eq!(succeed(&breaker).await, "refused", "open: refused untried");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(fail(&breaker).await, "Unavailable", "half-open: one probe");
        assert_eq!(succeed(&breaker).await, "refused", "the failed probe reopened it");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(succeed(&breaker).await, "ok");
        assert_eq!(succeed(&breaker).await, "ok", "closed again");
    }

    #[tokio::test]
    async fn a_success_resets_the_count_and_answers_are_not_failures() {
        let breaker = CircuitBreaker::new("test", 2, Duration::from_secs(60));
        assert_eq!(fail(&breaker).await, "Unavailable");
        assert_eq!(succeed(&breaker).await, "ok");
        assert_eq!(fail(&breaker).await, "Unavailable");
        let not_found = breaker
            .call(async { Err::<(), _>(Status::not_found("no such sku")) })
            .await;
        assert_eq!(outcome(not_found), "NotFound");
        assert_eq!(fail(&breaker).await, "Unavailable", "NOT_FOUND reset the count");
        assert_eq!(
            fail(&breaker).await,
            "Unavailable",
            "second failure in a row: tried, then opens"
        );
        assert_eq!(succeed(&breaker).await, "refused");
    }

    #[tokio::test]
    async fn only_one_probe_at_a_time_and_a_dropped_probe_frees_the_slot() {
        let breaker = CircuitBreaker::new("test", 1, Duration::from_millis(10));
        assert_eq!(fail(&breaker).await, "Unavailable");
        tokio::time::sleep(Duration::from_millis(20)).await;
        {
            let stuck = breaker.call(std::future::pending::<Result<(), Status>>());
            tokio::pin!(stuck);
            assert!(
                tokio::time::timeout(Duration::from_millis(5), &mut stuck)
                    .await
                    .is_err(),
                "the probe hangs"
            );
            assert_eq!(succeed(&breaker).await, "refused", "a second probe is refused");
        }
        assert_eq!(succeed(&breaker).await, "ok", "the dropped probe freed the slot");
    }
}
