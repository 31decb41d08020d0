//! An order's payment as a state machine, with the provider calls it makes.
//!
//! ```text
//!                 reserved            charged
//!  (none) ─────────────────▶ PENDING ─────────▶ SUCCEEDED ──cancelled, refunded──▶ REFUNDED
//!    │ │  reserved, expired    │ │  declined
//!    │ └─────────────▶ FAILED ◀┘ │           out of attempts,     voided
//!    │                     ▲     └─────────▶ VOIDING ──────────────────┘ (FAILED, or
//!    │ cancelled           └─────────────────┘ ▲   order cancelled       CANCELLED when
//!    └───────────▶ CANCELLED                   └─────────────────────    its order was)
//! ```
//!
//! A handler asks [`decide`] what an input means for the payment as it
//! stands, under its row lock; applies the answer (new status, event) in
//! that transaction; then, after the commit, makes the provider call the
//! decision names, and feeds its answer back to [`decide`] in a new
//! transaction. Provider calls never happen inside a transaction. The saga
//! model (`saga-model`) checks this function over every interleaving.

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Recorded before the provider is asked; charged at most once under
    /// its key. `attempts`: calls that timed out so far.
    Pending {
        attempts: u32,
    },
    /// Whatever was charged is being voided; never charged again.
    Voiding(Voiding),
    Succeeded,
    Failed,
    Refunded,
    Cancelled,
}

/// Why a payment is being voided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Voiding {
    /// Every attempt timed out: the charge's outcome is unknown.
    OutOfAttempts,
    /// Its order was cancelled while the charge was unsettled.
    OrderCancelled,
}

/// What a payment hears, or what the provider answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Input {
    /// `inventory.reserved`; `expired`: its reservation's deadline passed.
    Reserved { expired: bool },
    /// `orders.cancelled`.
    Cancelled,
    /// The answer to [`Call::Charge`].
    Charged(ChargeAnswer),
    /// The answer to [`Call::Void`].
    Voided(VoidAnswer),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChargeAnswer {
    Succeeded,
    Declined,
    /// Refused: nothing was charged, and the call can be repeated.
    Unavailable,
    /// No answer in time: the charge may or may not have happened.
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VoidAnswer {
    /// Nothing stands charged under the payment's key, now or later.
    Done,
    /// Unavailable or timed out: try again.
    Failed,
}

/// A call to the provider, made after the decision's commit, under the
/// payment's idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Call {
    Charge,
    /// Refunds a charge, or makes sure none can happen (the provider's
    /// `refund_or_void`).
    Void,
}

/// The event a decision publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Publish {
    Succeeded,
    Failed(FailReason),
    Refunded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailReason {
    /// The provider declined: its reason is the payment's.
    Declined,
    /// The reservation expired before the charge: charging would only mean
    /// a refund.
    ReservationExpired,
    /// Every attempt timed out; whatever they charged was voided.
    ProviderUnreachable,
}

impl FailReason {
    /// As recorded and published, where the provider does not give it.
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Self::Declined => None,
            Self::ReservationExpired => Some("reservation_expired"),
            Self::ProviderUnreachable => Some("provider_unreachable"),
        }
    }
}

/// What the handler does once the decision is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Then {
    /// The event is handled: recorded in the inbox with the decision, which
    /// is dropped if the inbox has it already.
    Done,
    /// Make this call, then decide on its answer.
    Call(Call),
    /// Have the event redelivered later.
    Retry(&'static str),
}

/// What [`decide`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Decision {
    /// The payment's new status (created when there was none).
    pub to: Option<Status>,
    pub publish: Option<Publish>,
    pub then: Then,
}

impl Decision {
    fn done() -> Self {
        Self::then(Then::Done)
    }

    fn then(then: Then) -> Self {
        Self {
            to: None,
            publish: None,
            then,
        }
    }

    fn to(self, status: Status) -> Self {
        Self {
            to: Some(status),
            ..self
        }
    }

    fn publish(self, publish: Publish) -> Self {
        Self {
            publish: Some(publish),
            ..self
        }
    }
}

/// The state machine: what `input` means for the payment `current` (`None`:
/// no payment for the order yet). `max_attempts`: timed-out charges before
/// the charge is voided.
pub fn decide(current: Option<Status>, input: Input, max_attempts: u32) -> Decision {
    use Status::{Cancelled, Failed, Pending, Refunded, Succeeded};
    let charge = Decision::then(Then::Call(Call::Charge));
    let void = Decision::then(Then::Call(Call::Void));
    match (current, input) {
        // The stock is gone already; charging now would only mean a refund.
        (None, Input::Reserved { expired: true }) => Decision::done()
            .to(Failed)
            .publish(Publish::Failed(FailReason::ReservationExpired)),
        (None, Input::Reserved { expired: false }) => charge.to(Pending { attempts: 0 }),
        // A charge whose answer was lost: the same key yields the same outcome.
        (Some(Pending { .. }), Input::Reserved { .. }) => charge,
        // Never charge again: the provider would answer with the original
        // charge, refunded or not.
        (Some(Status::Voiding(_)), Input::Reserved { .. }) => void,
        (Some(Succeeded | Failed | Refunded | Cancelled), Input::Reserved { .. }) => Decision::done(),

        // Cancelled before any charge: a tombstone, so a late
        // `inventory.reserved` charges nothing.
        (None, Input::Cancelled) => Decision::done().to(Cancelled),
        // A charge in flight (or stuck behind an outage) for an order that
        // is over: the intent comes first, so it can no longer succeed.
        (Some(Pending { .. } | Status::Voiding(_)), Input::Cancelled) => {
            void.to(Status::Voiding(Voiding::OrderCancelled))
        }
        (Some(Succeeded), Input::Cancelled) => void,
        (Some(Failed | Refunded | Cancelled), Input::Cancelled) => Decision::done(),

        (Some(Pending { .. }), Input::Charged(ChargeAnswer::Succeeded)) => {
            Decision::done().to(Succeeded).publish(Publish::Succeeded)
        }
        (Some(Pending { .. }), Input::Charged(ChargeAnswer::Declined)) => Decision::done()
            .to(Failed)
            .publish(Publish::Failed(FailReason::Declined)),
        // An outage delays the payment, however long it lasts, without
        // failing it: the reservation's deadline bounds the wait.
        (Some(Pending { .. }), Input::Charged(ChargeAnswer::Unavailable)) => {
            Decision::then(Then::Retry("the provider is unavailable"))
        }
        (Some(Pending { attempts }), Input::Charged(ChargeAnswer::Timeout)) => {
            let attempts = attempts + 1;
            if attempts < max_attempts {
                Decision::then(Then::Retry("the charge timed out")).to(Pending { attempts })
            } else {
                // Out of attempts with an unknown outcome: make sure no
                // charge stands, then fail the payment.
                void.to(Status::Voiding(Voiding::OutOfAttempts))
            }
        }
        // A voiding payment leaves `voiding` only once a void went through:
        // a charge in flight when the void began may still answer that it
        // took the money, and settling on that answer would leave the money
        // taken if the void then failed for good.
        (Some(Status::Voiding(_)), Input::Charged(ChargeAnswer::Succeeded)) => void,
        // A decline took nothing: the cancellation, or the decline, decides.
        (Some(Status::Voiding(Voiding::OrderCancelled)), Input::Charged(ChargeAnswer::Declined)) => {
            Decision::done().to(Cancelled)
        }
        (Some(Status::Voiding(Voiding::OutOfAttempts)), Input::Charged(ChargeAnswer::Declined)) => Decision::done()
            .to(Failed)
            .publish(Publish::Failed(FailReason::Declined)),
        (Some(Status::Voiding(_)), Input::Charged(ChargeAnswer::Unavailable)) => {
            Decision::then(Then::Retry("the provider is unavailable"))
        }
        (Some(Status::Voiding(_)), Input::Charged(ChargeAnswer::Timeout)) => void,
        (None | Some(Succeeded | Failed | Refunded | Cancelled), Input::Charged(_)) => Decision::done(),

        (Some(Status::Voiding(Voiding::OutOfAttempts)), Input::Voided(VoidAnswer::Done)) => Decision::done()
            .to(Failed)
            .publish(Publish::Failed(FailReason::ProviderUnreachable)),
        (Some(Status::Voiding(Voiding::OrderCancelled)), Input::Voided(VoidAnswer::Done)) => {
            Decision::done().to(Cancelled)
        }
        (Some(Succeeded), Input::Voided(VoidAnswer::Done)) => Decision::done().to(Refunded).publish(Publish::Refunded),
        (None | Some(Pending { .. } | Failed | Refunded | Cancelled), Input::Voided(VoidAnswer::Done)) => {
            Decision::done()
        }
        (_, Input::Voided(VoidAnswer::Failed)) => Decision::then(Then::Retry("the void or refund failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 3;

    fn statuses() -> Vec<Option<Status>> {
        let mut all = vec![None];
        all.extend(
            [
                Status::Pending { attempts: 0 },
                Status::Pending { attempts: MAX - 1 },
                Status::Voiding(Voiding::OutOfAttempts),
                Status::Voiding(Voiding::OrderCancelled),
                Status::Succeeded,
                Status::Failed,
                Status::Refunded,
                Status::Cancelled,
            ]
            .map(Some),
        );
        all
    }

    fn inputs() -> Vec<Input> {
        let mut all = vec![
            Input::Reserved { expired: false },
            Input::Reserved { expired: true },
            Input::Cancelled,
        ];
        all.extend(
            [
                ChargeAnswer::Succeeded,
                ChargeAnswer::Declined,
                ChargeAnswer::Unavailable,
                ChargeAnswer::Timeout,
            ]
            .map(Input::Charged),
        );
        all.extend([VoidAnswer::Done, VoidAnswer::Failed].map(Input::Voided));
        all
    }

    #[test]
    fn settled_payments_move_only_from_succeeded_to_refunded() {
        for current in statuses() {
            for input in inputs() {
                let decision = decide(current, input, MAX);
                if let Some(Status::Failed | Status::Refunded | Status::Cancelled) = current {
                    assert_eq!(decision.to, None, "{current:?} moved on {input:?}");
                    // A void that failed is repeated whatever the payment says.
                    if input != Input::Voided(VoidAnswer::Failed) {
                        assert_eq!(decision.then, Then::Done, "{current:?} on {input:?}");
                    }
                }
                if current == Some(Status::Succeeded) {
                    assert!(
                        matches!(decision.to, None | Some(Status::Refunded)),
                        "{current:?} moved on {input:?} to {:?}",
                        decision.to
                    );
                }
            }
        }
    }

    #[test]
    fn a_voiding_payment_is_never_charged_again() {
        for voiding in [Voiding::OutOfAttempts, Voiding::OrderCancelled] {
            for input in inputs() {
                let decision = decide(Some(Status::Voiding(voiding)), input, MAX);
                assert_ne!(decision.then, Then::Call(Call::Charge), "{voiding:?} on {input:?}");
                assert_ne!(decision.to, Some(Status::Succeeded), "{voiding:?} on {input:?}");
            }
        }
    }

    #[test]
    fn every_event_is_published_with_the_status_it_announces() {
        for current in statuses() {
            for input in inputs() {
                let d = decide(current, input, MAX);
                let expected = match d.publish {
                    None => continue,
                    Some(Publish::Succeeded) => Status::Succeeded,
                    Some(Publish::Failed(_)) => Status::Failed,
                    Some(Publish::Refunded) => Status::Refunded,
                };
                assert_eq!(d.to, Some(expected), "{current:?} on {input:?}");
                assert_eq!(d.then, Then::Done, "announced, so handled: {current:?} on {input:?}");
            }
        }
    }

    #[test]
    fn a_voiding_payment_that_hears_of_money_taken_voids_before_it_settles() {
        for voiding in [Voiding::OutOfAttempts, Voiding::OrderCancelled] {
            let decision = decide(
                Some(Status::Voiding(voiding)),
                Input::Charged(ChargeAnswer::Succeeded),
                MAX,
            );
            assert_eq!(decision, Decision::then(Then::Call(Call::Void)), "{voiding:?}");
        }
    }

    #[test]
    fn timeouts_count_until_the_charge_is_voided() {
        let timeout = Input::Charged(ChargeAnswer::Timeout);
        let first = decide(Some(Status::Pending { attempts: 0 }), timeout, MAX);
        assert_eq!(first.to, Some(Status::Pending { attempts: 1 }));
        assert!(matches!(first.then, Then::Retry(_)));
        let last = decide(Some(Status::Pending { attempts: MAX - 1 }), timeout, MAX);
        assert_eq!(last.to, Some(Status::Voiding(Voiding::OutOfAttempts)));
        assert_eq!(last.then, Then::Call(Call::Void));
        let voided = decide(last.to, Input::Voided(VoidAnswer::Done), MAX);
        assert_eq!(voided.publish, Some(Publish::Failed(FailReason::ProviderUnreachable)));
    }

    #[test]
    fn a_cancellation_voids_an_unsettled_charge_and_refunds_a_settled_one() {
        let pending = decide(Some(Status::Pending { attempts: 0 }), Input::Cancelled, MAX);
        assert_eq!(pending.to, Some(Status::Voiding(Voiding::OrderCancelled)));
        assert_eq!(pending.then, Then::Call(Call::Void));
        assert_eq!(
            decide(pending.to, Input::Voided(VoidAnswer::Done), MAX),
            Decision::done().to(Status::Cancelled)
        );
        let succeeded = decide(Some(Status::Succeeded), Input::Cancelled, MAX);
        assert_eq!((succeeded.to, succeeded.then), (None, Then::Call(Call::Void)));
        assert_eq!(
            decide(Some(Status::Succeeded), Input::Voided(VoidAnswer::Done), MAX).publish,
            Some(Publish::Refunded)
        );
        assert_eq!(decide(None, Input::Cancelled, MAX).to, Some(Status::Cancelled));
    }
}
