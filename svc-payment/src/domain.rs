//! An order's payment as a state machine, with the provider calls it makes.
//!
//! ```text
//!                 reserved            charged
//!  (none) ─────────────────▶ PENDING ─────────▶ SUCCEEDED ──cancelled, refunded──▶ REFUNDED
//!    │ │  reserved, expired    │ │ │  declined      ▲                                  ▲
//!    │ └─────────────▶ FAILED ◀┘ │ └──▶ AWAITING ───┘ settled (webhook or             │
//!    │                     ▲     │      (processing,     reconciliation)             │
//!    │                     │     │       customer action)                            │
//!    │                     │     │  out of attempts,     voided                      │
//!    │                     │     └─────────▶ VOIDING ──────────────────┘ (FAILED, or │
//!    │ cancelled           └─────────────────┘ ▲   order cancelled       CANCELLED)  │
//!    └───────────▶ CANCELLED ──captured late───┘ (LateCapture) ──refunded───────────┘
//! ```
//!
//! A handler asks [`decide`] what an input means for the payment as it
//! stands, under its row lock; applies the answer (new status, event) in
//! that transaction; then, after the commit, makes the provider call the
//! decision names, and feeds its answer back to [`decide`] in a new
//! transaction. Provider calls never happen inside a transaction. The saga
//! model (`saga-model`) checks this function over every interleaving.
//!
//! What the provider says by webhook is only a hint: the handler reads what
//! stands under the payment's key from the provider itself and decides on
//! that ([`Input::Found`]), so a late, repeated, reordered or false webhook
//! changes nothing the provider did not do.

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Recorded before the provider is asked; charged at most once under
    /// its key. `attempts`: calls that timed out so far.
    Pending {
        attempts: u32,
    },
    /// The provider took the charge but has not settled it: it settles by
    /// itself, or once the customer authenticated. Its word comes by
    /// webhook or reconciliation.
    Awaiting(Wait),
    /// Whatever was charged is being voided; never charged again.
    Voiding(Voiding),
    Succeeded,
    Failed,
    Refunded,
    Cancelled,
}

/// What an unsettled charge waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Wait {
    /// The provider settles it later (a bank debit, a wallet).
    Processing,
    /// The customer must authenticate it (3-D Secure).
    CustomerAction,
}

/// Why a payment is being voided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Voiding {
    /// Every attempt timed out: the charge's outcome is unknown.
    OutOfAttempts,
    /// Its order was cancelled while the charge was unsettled.
    OrderCancelled,
    /// Money was captured for a payment that had already ended (failed or
    /// cancelled): it goes back.
    LateCapture,
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
    /// What the provider shows under the payment's key now, read after a
    /// webhook or by reconciliation.
    Found(Standing),
    /// The answer to [`Call::Void`].
    Voided(VoidAnswer),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChargeAnswer {
    Succeeded,
    Declined,
    /// Taken but not settled.
    Awaiting(Wait),
    /// Refused: nothing was charged, and the call can be repeated.
    Unavailable,
    /// No answer in time: the charge may or may not have happened.
    Timeout,
}

/// Where the money under a payment's key stands at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Standing {
    /// Captured, and not all of it refunded.
    Captured,
    /// Not settled yet.
    Awaiting(Wait),
    /// Nothing taken, and nothing will be: declined, cancelled, or
    /// refunded in full.
    NothingHeld,
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
    /// `payments.awaiting`: what the charge now waits for.
    Awaiting,
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
    use ChargeAnswer as A;
    use Standing as S;
    use Status::{Awaiting, Cancelled, Failed, Pending, Refunded, Succeeded, Voiding as V};
    let charge = Decision::then(Then::Call(Call::Charge));
    let void = Decision::then(Then::Call(Call::Void));
    let succeed = Decision::done().to(Succeeded).publish(Publish::Succeeded);
    let decline = Decision::done()
        .to(Failed)
        .publish(Publish::Failed(FailReason::Declined));
    let wait = |from: Option<Wait>, wait: Wait| match from == Some(wait) {
        true => Decision::done(),
        false => Decision::done().to(Awaiting(wait)).publish(Publish::Awaiting),
    };
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
        (Some(V(_)), Input::Reserved { .. }) => void,
        // The provider has the charge; its word settles it.
        (Some(Awaiting(_) | Succeeded | Failed | Refunded | Cancelled), Input::Reserved { .. }) => Decision::done(),

        // Cancelled before any charge: a tombstone, so a late
        // `inventory.reserved` charges nothing.
        (None, Input::Cancelled) => Decision::done().to(Cancelled),
        // A charge in flight, unsettled, or stuck behind an outage, for an
        // order that is over: the intent comes first, so it can no longer
        // succeed.
        (
            Some(Pending { .. } | Awaiting(_) | V(Voiding::OutOfAttempts | Voiding::OrderCancelled)),
            Input::Cancelled,
        ) => void.to(V(Voiding::OrderCancelled)),
        // Going back already, and announced as a refund when it is.
        (Some(V(Voiding::LateCapture)), Input::Cancelled) => void,
        (Some(Succeeded), Input::Cancelled) => void,
        (Some(Failed | Refunded | Cancelled), Input::Cancelled) => Decision::done(),

        (Some(Pending { .. } | Awaiting(_)), Input::Charged(A::Succeeded) | Input::Found(S::Captured)) => succeed,
        (Some(Pending { .. } | Awaiting(_)), Input::Charged(A::Declined) | Input::Found(S::NothingHeld)) => decline,
        (Some(Pending { .. }), Input::Charged(A::Awaiting(w)) | Input::Found(S::Awaiting(w))) => wait(None, w),
        (Some(Awaiting(from)), Input::Charged(A::Awaiting(w)) | Input::Found(S::Awaiting(w))) => wait(Some(from), w),
        // An outage delays the payment, however long it lasts, without
        // failing it: the reservation's deadline bounds the wait.
        (Some(Pending { .. }), Input::Charged(A::Unavailable)) => {
            Decision::then(Then::Retry("the provider is unavailable"))
        }
        (Some(Pending { attempts }), Input::Charged(A::Timeout)) => {
            let attempts = attempts + 1;
            if attempts < max_attempts {
                Decision::then(Then::Retry("the charge timed out")).to(Pending { attempts })
            } else {
                // Out of attempts with an unknown outcome: make sure no
                // charge stands, then fail the payment.
                void.to(V(Voiding::OutOfAttempts))
            }
        }
        // A charge answer lost after the provider's own word came: that
        // word stands, and the next one comes the same way.
        (Some(Awaiting(_)), Input::Charged(A::Unavailable | A::Timeout)) => Decision::done(),

        // A voiding payment leaves `voiding` only once a void went through:
        // a charge in flight when the void began may still answer that it
        // took the money, and settling on that answer would leave the money
        // taken if the void then failed for good.
        (
            Some(V(_)),
            Input::Charged(A::Succeeded | A::Awaiting(_) | A::Timeout) | Input::Found(S::Captured | S::Awaiting(_)),
        ) => void,
        (Some(V(_)), Input::Charged(A::Unavailable)) => Decision::then(Then::Retry("the provider is unavailable")),
        // Nothing taken: the cancellation, or the decline, decides.
        (Some(V(Voiding::OrderCancelled)), Input::Charged(A::Declined) | Input::Found(S::NothingHeld)) => {
            Decision::done().to(Cancelled)
        }
        (Some(V(Voiding::OutOfAttempts)), Input::Charged(A::Declined)) => decline,
        (Some(V(Voiding::OutOfAttempts)), Input::Found(S::NothingHeld)) => Decision::done()
            .to(Failed)
            .publish(Publish::Failed(FailReason::ProviderUnreachable)),
        // The money was captured: a decline heard now is older than that.
        (Some(V(Voiding::LateCapture)), Input::Charged(A::Declined)) => void,
        // Refunded in full: what a void of a late capture waits for.
        (Some(V(Voiding::LateCapture)), Input::Found(S::NothingHeld)) => {
            Decision::done().to(Refunded).publish(Publish::Refunded)
        }

        // A settled payment: its charge's late answers change nothing.
        (None | Some(Succeeded | Failed | Refunded | Cancelled), Input::Charged(_)) => Decision::done(),
        (None | Some(Succeeded | Refunded), Input::Found(_)) => Decision::done(),
        // Money came in for a payment that had ended (an authentication
        // finished after the order's cancellation): it goes back.
        (Some(Failed | Cancelled), Input::Found(S::Captured)) => void.to(V(Voiding::LateCapture)),
        // Still unsettled for a payment that ended: make sure it never is.
        (Some(Failed | Cancelled), Input::Found(S::Awaiting(_))) => void,
        (Some(Failed | Cancelled), Input::Found(S::NothingHeld)) => Decision::done(),

        (Some(V(Voiding::OutOfAttempts)), Input::Voided(VoidAnswer::Done)) => Decision::done()
            .to(Failed)
            .publish(Publish::Failed(FailReason::ProviderUnreachable)),
        (Some(V(Voiding::OrderCancelled)), Input::Voided(VoidAnswer::Done)) => Decision::done().to(Cancelled),
        (Some(Succeeded | V(Voiding::LateCapture)), Input::Voided(VoidAnswer::Done)) => {
            Decision::done().to(Refunded).publish(Publish::Refunded)
        }
        (
            None | Some(Pending { .. } | Awaiting(_) | Failed | Refunded | Cancelled),
            Input::Voided(VoidAnswer::Done),
        ) => Decision::done(),
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
                Status::Awaiting(Wait::Processing),
                Status::Awaiting(Wait::CustomerAction),
                Status::Voiding(Voiding::OutOfAttempts),
                Status::Voiding(Voiding::OrderCancelled),
                Status::Voiding(Voiding::LateCapture),
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
                ChargeAnswer::Awaiting(Wait::Processing),
                ChargeAnswer::Awaiting(Wait::CustomerAction),
                ChargeAnswer::Unavailable,
                ChargeAnswer::Timeout,
            ]
            .map(Input::Charged),
        );
        all.extend(
            [
                Standing::Captured,
                Standing::Awaiting(Wait::Processing),
                Standing::Awaiting(Wait::CustomerAction),
                Standing::NothingHeld,
            ]
            .map(Input::Found),
        );
        all.extend([VoidAnswer::Done, VoidAnswer::Failed].map(Input::Voided));
        all
    }

    #[test]
    fn settled_payments_move_only_to_a_refund() {
        for current in statuses() {
            for input in inputs() {
                let decision = decide(current, input, MAX);
                if let Some(Status::Failed | Status::Refunded | Status::Cancelled) = current {
                    // Only money captured after the end makes an ended
                    // payment move: to be given back.
                    let expected = match (current, input) {
                        (Some(Status::Failed | Status::Cancelled), Input::Found(Standing::Captured)) => {
                            Some(Status::Voiding(Voiding::LateCapture))
                        }
                        _ => None,
                    };
                    assert_eq!(decision.to, expected, "{current:?} moved on {input:?}");
                    assert_eq!(decision.publish, None, "{current:?} on {input:?}");
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
    fn an_awaiting_payment_settles_only_on_the_providers_word() {
        for wait in [Wait::Processing, Wait::CustomerAction] {
            let awaiting = Some(Status::Awaiting(wait));
            for input in inputs() {
                let decision = decide(awaiting, input, MAX);
                assert_ne!(decision.then, Then::Call(Call::Charge), "{wait:?} on {input:?}");
                let settles = matches!(decision.to, Some(Status::Succeeded | Status::Failed));
                let word = matches!(
                    input,
                    Input::Found(Standing::Captured | Standing::NothingHeld)
                        | Input::Charged(ChargeAnswer::Succeeded | ChargeAnswer::Declined)
                );
                assert_eq!(settles, word, "{wait:?} on {input:?}: {decision:?}");
                // Waiting is no failure: nothing is retried or given up.
                assert!(!matches!(decision.then, Then::Retry(_)) || input == Input::Voided(VoidAnswer::Failed));
            }
        }
    }

    #[test]
    fn a_payment_that_starts_or_changes_waiting_says_so_once() {
        let processing = Status::Awaiting(Wait::Processing);
        let action = Status::Awaiting(Wait::CustomerAction);
        let charged = decide(
            Some(Status::Pending { attempts: 0 }),
            Input::Charged(ChargeAnswer::Awaiting(Wait::CustomerAction)),
            MAX,
        );
        assert_eq!(charged, Decision::done().to(action).publish(Publish::Awaiting));
        let again = decide(
            Some(action),
            Input::Found(Standing::Awaiting(Wait::CustomerAction)),
            MAX,
        );
        assert_eq!(again, Decision::done());
        let authenticated = decide(Some(action), Input::Found(Standing::Awaiting(Wait::Processing)), MAX);
        assert_eq!(
            authenticated,
            Decision::done().to(processing).publish(Publish::Awaiting)
        );
    }

    #[test]
    fn a_capture_after_the_end_is_refunded_and_announced() {
        for ended in [Status::Failed, Status::Cancelled] {
            let late = decide(Some(ended), Input::Found(Standing::Captured), MAX);
            assert_eq!(
                late,
                Decision::then(Then::Call(Call::Void)).to(Status::Voiding(Voiding::LateCapture))
            );
            let refunded = decide(late.to, Input::Voided(VoidAnswer::Done), MAX);
            assert_eq!(
                refunded,
                Decision::done().to(Status::Refunded).publish(Publish::Refunded)
            );
            // Still unsettled when it ended: voided, and stays ended.
            let unsettled = decide(Some(ended), Input::Found(Standing::Awaiting(Wait::Processing)), MAX);
            assert_eq!(unsettled, Decision::then(Then::Call(Call::Void)));
        }
    }

    #[test]
    fn a_cancelled_order_voids_a_charge_that_waits() {
        for wait in [Wait::Processing, Wait::CustomerAction] {
            let decision = decide(Some(Status::Awaiting(wait)), Input::Cancelled, MAX);
            assert_eq!(
                decision,
                Decision::then(Then::Call(Call::Void)).to(Status::Voiding(Voiding::OrderCancelled))
            );
        }
    }

    #[test]
    fn a_voiding_payment_is_never_charged_again() {
        for voiding in [Voiding::OutOfAttempts, Voiding::OrderCancelled, Voiding::LateCapture] {
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
                    Some(Publish::Awaiting) => match d.to {
                        Some(Status::Awaiting(wait)) => Status::Awaiting(wait),
                        other => panic!("{current:?} on {input:?} announces waiting, moving to {other:?}"),
                    },
                };
                assert_eq!(d.to, Some(expected), "{current:?} on {input:?}");
                assert_eq!(d.then, Then::Done, "announced, so handled: {current:?} on {input:?}");
            }
        }
    }

    #[test]
    fn a_voiding_payment_that_hears_of_money_taken_voids_before_it_settles() {
        for voiding in [Voiding::OutOfAttempts, Voiding::OrderCancelled, Voiding::LateCapture] {
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
