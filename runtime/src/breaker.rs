//! A circuit breaker per upstream, so a dead dependency costs callers
//! microseconds instead of a connect attempt or a deadline each.
//!
//! Closed: calls pass; `failure_threshold` consecutive failures (connect
//! errors, deadlines: no answer from the upstream) open it. Open: calls are refused at
//! once, without touching the network, until the cool-down ends. Half-open:
//! exactly one probe call passes; its success closes the breaker, its failure
//! opens it for another cool-down. A probe whose caller goes away without an
//! outcome frees the slot for the next one. Gauge
//! `shop_upstream_breaker_open{upstream}`: how many of the upstream's
//! replicas ([`CircuitBreaker::for_endpoint`]) have their breaker open. Not
//! one series per replica: replicas come and go with every rollout, and a
//! series per address would grow without end, with the last value of a gone
//! replica paging for ever. A breaker that goes away open (its replica left)
//! counts no longer.
//!
//! [`CircuitBreaker::call`] wraps one gRPC call; [`CircuitBreaker::admit`]
//! and [`Permit::report`] serve callers (the gateway's proxy) that judge the
//! outcome themselves.

use std::{
    future::Future,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use tonic::{Code, Status};

use crate::config::EnvReader;

/// When an upstream's breaker opens and how long it stays open: the same
/// two settings in every service that calls another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// `UPSTREAM_BREAKER_FAILURES`: consecutive failures that open it
    /// (default 5).
    pub failure_threshold: u32,
    /// `UPSTREAM_BREAKER_COOL_DOWN`: how long it stays open before one probe
    /// call (default 5s).
    pub cool_down: Duration,
}

impl BreakerSettings {
    pub fn read(env: &mut EnvReader) -> Self {
        Self {
            failure_threshold: env.count("UPSTREAM_BREAKER_FAILURES", 5),
            cool_down: env.positive_duration("UPSTREAM_BREAKER_COOL_DOWN", Duration::from_secs(5)),
        }
    }

    /// A breaker with these settings in front of one replica of `upstream`.
    pub fn breaker_for(&self, upstream: &'static str, endpoint: String) -> CircuitBreaker {
        CircuitBreaker::for_endpoint(upstream, endpoint, self.failure_threshold, self.cool_down)
    }
}

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
    /// The replica it guards, when the upstream has several.
    endpoint: Option<String>,
    open: metrics::Gauge,
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
    pub fn new(upstream: &'static str, failure_threshold: u32, cool_down: Duration) -> Self {
        Self::with_endpoint(upstream, None, failure_threshold, cool_down)
    }

    /// A breaker in front of the replica at `endpoint` of `upstream`.
    pub fn for_endpoint(upstream: &'static str, endpoint: String, failure_threshold: u32, cool_down: Duration) -> Self {
        Self::with_endpoint(upstream, Some(endpoint), failure_threshold, cool_down)
    }

    fn with_endpoint(
        upstream: &'static str,
        endpoint: Option<String>,
        failure_threshold: u32,
        cool_down: Duration,
    ) -> Self {
        // Shared by the upstream's breakers: each adds itself while open.
        let open = metrics::gauge!(crate::series::UPSTREAM_BREAKER_OPEN, "upstream" => upstream);
        // Shows the series (at 0) before any breaker opens.
        open.increment(0.0);
        Self {
            upstream,
            endpoint,
            open,
            failure_threshold: failure_threshold.max(1),
            cool_down,
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

    /// Runs a gRPC call unless the breaker is open. Only failing to reach
    /// the upstream or to hear from it in time counts as a failure: any
    /// answer, NOT_FOUND or even UNAVAILABLE, proves it is up. A call dropped
    /// mid-way (its caller gave up) is abandoned, not failed.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<Result<T, Status>, BreakerOpen> {
        let permit = self.admit().ok_or(BreakerOpen)?;
        let result = call.await;
        permit.report(match &result {
            Err(status) if is_upstream_failure(status) => Outcome::Failure,
            _ => Outcome::Success,
        });
        Ok(result)
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
                tracing::info!(
                    upstream = self.upstream,
                    endpoint = self.endpoint.as_deref(),
                    "circuit half-open: probing"
                );
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
        let was_closed = matches!(*state, State::Closed { .. });
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
                        endpoint = self.endpoint.as_deref(),
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
                tracing::info!(
                    upstream = self.upstream,
                    endpoint = self.endpoint.as_deref(),
                    "circuit closed: upstream answers again"
                );
                State::Closed {
                    consecutive_failures: 0,
                }
            }
            (State::HalfOpen { .. }, Outcome::Failure) if probe => {
                tracing::warn!(
                    upstream = self.upstream,
                    endpoint = self.endpoint.as_deref(),
                    "probe failed: circuit open again"
                );
                open
            }
            (State::HalfOpen { .. }, Outcome::Abandoned) if probe => State::HalfOpen { probe_in_flight: false },
            // Late reports of calls admitted before the state changed, and
            // abandoned non-probe calls, change nothing.
            (current, _) => current,
        };
        let is_closed = matches!(*state, State::Closed { .. });
        match (was_closed, is_closed) {
            (true, false) => self.open.increment(1.0),
            (false, true) => self.open.decrement(1.0),
            _ => {}
        }
    }
}

impl Drop for CircuitBreaker {
    fn drop(&mut self) {
        if self.is_open() {
            self.open.decrement(1.0);
        }
    }
}

/// The breaker refused the call without trying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOpen;

/// Statuses that mean the upstream (or the way to it) is failing.
/// A failure to reach the upstream or to hear from it in time. Those
/// statuses are made on this side, by the channel, and carry the transport
/// error or the timeout as their source; a status the upstream sent (its
/// own UNAVAILABLE about its dependencies, say) has none, and proves it up.
fn is_upstream_failure(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
        && matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal | Code::Cancelled
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `shop_upstream_breaker_open` series as `(labels, value)`.
    fn open_series(handle: &metrics_exporter_prometheus::PrometheusHandle) -> Vec<(String, f64)> {
        handle
            .render()
            .lines()
            .filter_map(|line| line.strip_prefix(crate::series::UPSTREAM_BREAKER_OPEN))
            .filter_map(|rest| {
                let (labels, value) = rest.rsplit_once(' ')?;
                Some((labels.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn the_gauge_counts_the_open_breakers_of_an_upstream_and_forgets_replicas_that_left() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (one, two) = metrics::with_local_recorder(&recorder, || {
            let replica =
                |addr: &str| CircuitBreaker::for_endpoint("order", addr.to_owned(), 1, Duration::from_secs(5));
            (replica("10.0.0.1:50051"), replica("10.0.0.2:50051"))
        });
        let at = |value: f64| vec![(r#"{upstream="order"}"#.to_owned(), value)];
        assert_eq!(open_series(&handle), at(0.0));
        let t0 = Instant::now();
        one.record(false, Outcome::Failure, t0);
        two.record(false, Outcome::Failure, t0);
        assert_eq!(open_series(&handle), at(2.0));
        // The first replica goes away (a rollout) with its breaker open.
        drop(one);
        assert_eq!(open_series(&handle), at(1.0));
        // The second answers again.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(two.admit_at(later), Some(true));
        two.record(true, Outcome::Success, later);
        assert_eq!(
            open_series(&handle),
            at(0.0),
            "nothing pages once every replica there answers"
        );
    }

    fn breaker(threshold: u32, cool_down_ms: u64) -> CircuitBreaker {
        CircuitBreaker::new("test", threshold, Duration::from_millis(cool_down_ms))
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

    #[tokio::test]
    async fn calls_count_only_upstream_trouble_as_failure() {
        let b = breaker(2, 60_000);
        for _ in 0..5 {
            let answer = b.call(async { Err::<(), _>(Status::not_found("no such sku")) }).await;
            assert!(matches!(answer, Ok(Err(_))), "a NOT_FOUND proves the upstream is fine");
        }
        assert!(!b.is_open());
        // An upstream's own UNAVAILABLE (about its dependencies) is an
        // answer: it is up.
        for _ in 0..5 {
            let _ = b
                .call(async { Err::<(), _>(Status::unavailable("the catalog is away")) })
                .await;
        }
        assert!(!b.is_open(), "answers never open the breaker");
        // What the channel makes of a failed connection or its own timeout
        // carries that error as its source.
        for _ in 0..2 {
            let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
            let _ = b
                .call(async { Err::<(), _>(Status::from_error(Box::new(refused))) })
                .await;
        }
        assert!(b.is_open());
        let refused = b.call(async { Ok::<_, Status>(()) }).await;
        assert!(matches!(refused, Err(BreakerOpen)), "refused without being tried");
    }
}
