//! The faults of a run, drawn from its seed: the same seed and length give
//! the same plan (with this lockfile's `rand`).
//!
//! Faults come one at a time with a short calm between them, every kind
//! once per round in an order of the seed's choosing, so even a two-minute
//! run meets each kind; the parameters (which service, how long, which
//! proxy fault) are drawn too. A run of ten minutes or more also freezes
//! PostgreSQL for longer than two minutes, once, a third of the way in.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

/// Where a fault proxy sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Link {
    Nats,
    Postgres,
}

/// What a fault proxy does meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkFault {
    Latency(Duration),
    Reset,
    Blackhole,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// SIGKILL; the supervisor starts it again.
    Kill(&'static str),
    /// SIGKILL of svc-payment while its database answers slowly, so that
    /// handlers die between the provider's answer and their commit.
    KillMidCharge,
    /// SIGSTOP, and SIGCONT when the fault ends.
    Pause(&'static str),
    /// nats-server stopped, and started again on the same store when the
    /// fault ends.
    RestartNats,
    /// SIGSTOP to PostgreSQL and its backends: connections hang, nothing
    /// errors.
    FreezePostgres,
    RestartPostgres,
    RestartRedis,
    /// The payment provider emulator's `outage` knob: every call refused.
    ProviderOutage,
    /// Every webhook the provider sends meanwhile arrives a minute late.
    WebhooksDelayed,
    Link(Link, LinkFault),
    /// Events already handled, published again under new message ids:
    /// what a replaying operator or a duplicating network does.
    Replay,
    /// Messages no consumer can decode.
    Poison,
}

impl Fault {
    /// The kind, for the report.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill a service",
            Fault::KillMidCharge => "kill svc-payment mid-charge",
            Fault::Pause(_) => "pause a service",
            Fault::RestartNats => "restart nats-server",
            Fault::FreezePostgres => "freeze PostgreSQL",
            Fault::RestartPostgres => "restart PostgreSQL",
            Fault::RestartRedis => "restart Redis",
            Fault::ProviderOutage => "payment provider outage",
            Fault::WebhooksDelayed => "payment webhooks delayed",
            Fault::Link(Link::Nats, _) => "fault on the NATS link",
            Fault::Link(Link::Postgres, _) => "fault on the PostgreSQL link",
            Fault::Replay => "replay handled events",
            Fault::Poison => "publish poison",
        }
    }
}

/// One fault, from `at` (since the run began) for `lasts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Step {
    pub at: Duration,
    pub fault: Fault,
    pub lasts: Duration,
}

/// Faults begin this long after the load, and end this long before it.
const MARGIN: Duration = Duration::from_secs(5);
/// The long freeze of a long run: longer than two minutes.
const LONG_FREEZE: Duration = Duration::from_secs(130);
const LONG_RUN: Duration = Duration::from_secs(600);

/// The kinds, in the order a round is drawn from.
#[derive(Clone, Copy)]
enum Kind {
    Kill,
    KillMidCharge,
    Pause,
    RestartNats,
    FreezePostgres,
    RestartPostgres,
    RestartRedis,
    ProviderOutage,
    WebhooksDelayed,
    Link,
    Replay,
    Poison,
}

const KINDS: [Kind; 12] = [
    Kind::Kill,
    Kind::KillMidCharge,
    Kind::Pause,
    Kind::RestartNats,
    Kind::FreezePostgres,
    Kind::RestartPostgres,
    Kind::RestartRedis,
    Kind::ProviderOutage,
    Kind::WebhooksDelayed,
    Kind::Link,
    Kind::Replay,
    Kind::Poison,
];

pub(super) fn plan(seed: u64, run: Duration) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let secs = |rng: &mut StdRng, from: u64, to: u64| Duration::from_secs(rng.random_range(from..=to));
    let end = run.saturating_sub(MARGIN);
    let mut long_freeze = run >= LONG_RUN;
    let mut steps = Vec::new();
    let mut at = MARGIN;
    let mut round = Vec::new();
    let mut services: Vec<&'static str> = Vec::new();
    loop {
        if long_freeze && at >= run / 3 {
            long_freeze = false;
            steps.push(Step {
                at,
                fault: Fault::FreezePostgres,
                lasts: LONG_FREEZE,
            });
            at += LONG_FREEZE + secs(&mut rng, 2, 5);
        }
        if round.is_empty() {
            round = KINDS.to_vec();
            round.shuffle(&mut rng);
        }
        let Some(kind) = round.pop() else { break };
        // Every service `up` runs (by binary name), each once before any
        // twice, so a run of a few rounds kills and pauses every one.
        if services.is_empty() {
            services = crate::layout::SERVICES.iter().map(|s| s.name).collect();
            services.shuffle(&mut rng);
        }
        let service = match kind {
            Kind::Kill | Kind::Pause => services.pop().unwrap_or(shop_runtime::registry::ORDER.name),
            _ => "",
        };
        let (fault, lasts) = match kind {
            Kind::Kill => (Fault::Kill(service), Duration::ZERO),
            Kind::KillMidCharge => (Fault::KillMidCharge, secs(&mut rng, 1, 3)),
            Kind::Pause => (Fault::Pause(service), secs(&mut rng, 2, 6)),
            Kind::RestartNats => (Fault::RestartNats, secs(&mut rng, 1, 5)),
            Kind::FreezePostgres => (Fault::FreezePostgres, secs(&mut rng, 3, 12)),
            Kind::RestartPostgres => (Fault::RestartPostgres, secs(&mut rng, 1, 5)),
            Kind::RestartRedis => (Fault::RestartRedis, secs(&mut rng, 1, 4)),
            Kind::ProviderOutage => (Fault::ProviderOutage, secs(&mut rng, 3, 15)),
            Kind::WebhooksDelayed => (Fault::WebhooksDelayed, secs(&mut rng, 5, 15)),
            Kind::Link => {
                let link = if rng.random_bool(0.5) {
                    Link::Nats
                } else {
                    Link::Postgres
                };
                let fault = match rng.random_range(0..3) {
                    0 => LinkFault::Latency(Duration::from_millis(rng.random_range(20..=300))),
                    1 => LinkFault::Reset,
                    _ => LinkFault::Blackhole,
                };
                (Fault::Link(link, fault), secs(&mut rng, 1, 6))
            }
            Kind::Replay => (Fault::Replay, Duration::ZERO),
            Kind::Poison => (Fault::Poison, Duration::ZERO),
        };
        if at + lasts > end {
            break;
        }
        steps.push(Step { at, fault, lasts });
        at += lasts + secs(&mut rng, 1, 3);
    }
    steps
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const TWO_MINUTES: Duration = Duration::from_secs(120);

    #[test]
    fn a_seed_gives_one_plan() {
        assert_eq!(plan(7, TWO_MINUTES), plan(7, TWO_MINUTES));
        assert_ne!(plan(7, TWO_MINUTES), plan(8, TWO_MINUTES));
    }

    #[test]
    fn faults_come_one_at_a_time_within_the_run() {
        for seed in 0..50 {
            let steps = plan(seed, TWO_MINUTES);
            for pair in steps.windows(2) {
                assert!(pair[0].at + pair[0].lasts < pair[1].at, "seed {seed}: {pair:?} overlap");
            }
            let last = steps.last().expect("a plan has steps");
            assert!(last.at + last.lasts <= TWO_MINUTES - MARGIN, "seed {seed}");
        }
    }

    #[test]
    fn two_minutes_meet_every_kind_of_fault() {
        for seed in 0..50 {
            let kinds: BTreeSet<_> = plan(seed, TWO_MINUTES).iter().map(|s| s.fault.kind()).collect();
            assert!(kinds.len() >= 11, "seed {seed} meets only {kinds:?}");
        }
    }

    #[test]
    fn a_long_run_kills_every_service() {
        let killed: BTreeSet<_> = plan(42, Duration::from_secs(15 * 60))
            .into_iter()
            .filter_map(|s| match s.fault {
                Fault::Kill(service) => Some(service),
                _ => None,
            })
            .collect();
        assert_eq!(killed.len(), crate::layout::SERVICES.len(), "{killed:?}");
    }

    #[test]
    fn a_long_run_freezes_postgres_for_more_than_two_minutes() {
        let steps = plan(1, Duration::from_secs(15 * 60));
        assert!(
            steps
                .iter()
                .any(|s| s.fault == Fault::FreezePostgres && s.lasts > Duration::from_secs(120))
        );
        assert!(!plan(1, TWO_MINUTES).iter().any(|s| s.lasts > Duration::from_secs(120)));
    }
}
