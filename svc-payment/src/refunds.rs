//! A refund of a confirmed order as a state machine: what
//! `orders.refund_requested` starts, what the provider answers, and what
//! it later says the refund became.
//!
//! ```text
//!            requested          answered pending        found succeeded
//!  (none) ──────────────▶ REQUESTED ─────────────▶ PENDING ─────────────▶ SUCCEEDED
//!                          │  ▲ │  answered succeeded                       ▲
//!                          │  │ └───────────────────────────────────────────┘
//!                          │  └──── failed, attempts left (a new attempt) ◀── PENDING
//!                          └──── failed, no attempts left ──▶ FAILED
//! ```
//!
//! Each attempt is one provider refund under its own idempotency key
//! (`<refund id>` for the first, `<refund id>-<n>` after): a lost answer is
//! asked again under the same key and yields the same refund; a refund the
//! provider failed is a new one. Like [`crate::domain::decide`], a handler
//! decides under the row lock, commits, calls, and decides on the answer.

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Recorded; attempt `attempt` is to be asked (again) of the provider.
    Requested {
        attempt: u32,
    },
    /// The provider took it and has not settled it.
    Pending {
        attempt: u32,
    },
    Succeeded,
    /// Every attempt failed: nothing was given back.
    Failed,
}

/// What a refund hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Input {
    /// `orders.refund_requested`; `captured`: the order's payment holds
    /// money to give back.
    Requested { captured: bool },
    /// The provider's answer to [`Then::Call`], or what it shows of the
    /// refund now (after a webhook, or by reconciliation).
    Provider(Answer),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Answer {
    Succeeded,
    Pending,
    /// The provider refused or failed this attempt; nothing went back.
    Failed,
    /// No answer, or refused before acting: ask again under the same key.
    Unanswered,
}

/// The event a decision publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Publish {
    /// `payments.refunded` with the refund's id and amount.
    Refunded,
    /// `payments.refund_failed`.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Then {
    Done,
    /// Ask the provider for attempt `attempt` of the refund.
    Call {
        attempt: u32,
    },
    /// Have the input come again later.
    Retry(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Decision {
    pub to: Option<Status>,
    pub publish: Option<Publish>,
    pub then: Then,
}

impl Decision {
    const fn then(then: Then) -> Self {
        Self {
            to: None,
            publish: None,
            then,
        }
    }

    const fn to(self, status: Status) -> Self {
        Self {
            to: Some(status),
            ..self
        }
    }

    const fn publish(self, publish: Publish) -> Self {
        Self {
            publish: Some(publish),
            ..self
        }
    }
}

/// What `input` means for the refund `current` (`None`: not recorded
/// yet). `max_attempts`: provider refunds that may fail before the refund
/// is given up and shown failed.
pub fn decide(current: Option<Status>, input: Input, max_attempts: u32) -> Decision {
    use Answer as A;
    use Status::{Failed, Pending, Requested, Succeeded};
    let done = Decision::then(Then::Done);
    let succeeded = done.to(Succeeded).publish(Publish::Refunded);
    // A failed attempt: another under a new key, or the end.
    let failed = |attempt: u32| {
        let next = attempt + 1;
        if next < max_attempts {
            Decision::then(Then::Call { attempt: next }).to(Requested { attempt: next })
        } else {
            done.to(Failed).publish(Publish::Failed)
        }
    };
    match (current, input) {
        (None, Input::Requested { captured: true }) => {
            Decision::then(Then::Call { attempt: 0 }).to(Requested { attempt: 0 })
        }
        // Nothing to give back: shown failed at once, nothing recorded.
        (None, Input::Requested { captured: false }) => done.publish(Publish::Failed),
        // Asked again: the same attempt, under the same key.
        (Some(Requested { attempt }), Input::Requested { .. }) => Decision::then(Then::Call { attempt }),
        (Some(Pending { .. } | Succeeded | Failed), Input::Requested { .. }) => done,
        // Nothing recorded to answer for.
        (None, Input::Provider(_)) => done,

        (Some(Requested { .. } | Pending { .. }), Input::Provider(A::Succeeded)) => succeeded,
        (Some(Requested { attempt }), Input::Provider(A::Pending)) => done.to(Pending { attempt }),
        (Some(Pending { .. }), Input::Provider(A::Pending)) => done,
        (Some(Requested { attempt } | Pending { attempt }), Input::Provider(A::Failed)) => failed(attempt),
        (Some(Requested { .. }), Input::Provider(A::Unanswered)) => {
            Decision::then(Then::Retry("the provider did not take the refund"))
        }
        // Taken already; its settlement comes by webhook or reconciliation.
        (Some(Pending { .. }), Input::Provider(A::Unanswered)) => done,
        (Some(Succeeded | Failed), Input::Provider(_)) => done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 3;

    fn statuses() -> Vec<Option<Status>> {
        let mut all = vec![None];
        for attempt in [0, MAX - 1] {
            all.push(Some(Status::Requested { attempt }));
            all.push(Some(Status::Pending { attempt }));
        }
        all.extend([Some(Status::Succeeded), Some(Status::Failed)]);
        all
    }

    fn inputs() -> Vec<Input> {
        let mut all = vec![
            Input::Requested { captured: true },
            Input::Requested { captured: false },
        ];
        all.extend([Answer::Succeeded, Answer::Pending, Answer::Failed, Answer::Unanswered].map(Input::Provider));
        all
    }

    #[test]
    fn a_settled_refund_never_moves() {
        for current in [Status::Succeeded, Status::Failed] {
            for input in inputs() {
                assert_eq!(
                    decide(Some(current), input, MAX),
                    Decision::then(Then::Done),
                    "{current:?} on {input:?}"
                );
            }
        }
    }

    #[test]
    fn every_event_is_published_with_the_status_it_announces() {
        for current in statuses() {
            for input in inputs() {
                let d = decide(current, input, MAX);
                match d.publish {
                    Some(Publish::Refunded) => assert_eq!(d.to, Some(Status::Succeeded)),
                    // Or nothing recorded, when there was nothing to give back.
                    Some(Publish::Failed) if current.is_none() => assert_eq!(d.to, None),
                    Some(Publish::Failed) => assert_eq!(d.to, Some(Status::Failed)),
                    None => {}
                }
            }
        }
    }

    #[test]
    fn a_failed_attempt_is_followed_by_another_under_a_new_key_until_they_run_out() {
        let first = decide(
            Some(Status::Pending { attempt: 0 }),
            Input::Provider(Answer::Failed),
            MAX,
        );
        assert_eq!(
            first,
            Decision::then(Then::Call { attempt: 1 }).to(Status::Requested { attempt: 1 })
        );
        let last = decide(
            Some(Status::Requested { attempt: MAX - 1 }),
            Input::Provider(Answer::Failed),
            MAX,
        );
        assert_eq!(
            last,
            Decision::then(Then::Done).to(Status::Failed).publish(Publish::Failed)
        );
    }

    #[test]
    fn an_unanswered_attempt_is_asked_again_under_its_key() {
        let requested = Some(Status::Requested { attempt: 1 });
        assert!(matches!(
            decide(requested, Input::Provider(Answer::Unanswered), MAX).then,
            Then::Retry(_)
        ));
        assert_eq!(
            decide(requested, Input::Requested { captured: true }, MAX).then,
            Then::Call { attempt: 1 }
        );
    }
}
