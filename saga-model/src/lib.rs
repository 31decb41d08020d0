//! The checkout saga, and the refunds of confirmed orders, as a model for
//! the `stateright` model checker, built on the decision functions the
//! services run: svc-order's [`svc_order::domain::decide`] and
//! [`svc_order::refunds`], svc-inventory's
//! [`svc_inventory::domain::decide`] and [`svc_inventory::domain::hold`],
//! svc-payment's [`svc_payment::domain::decide`] and
//! [`svc_payment::refunds::decide`], and the provider emulator's
//! [`shop_provider::domain`] state machine.
//!
//! The checker enumerates every order of deliveries, duplicates, crashes,
//! provider answers, webhooks, reconciliation, customers' authentications,
//! cancellations, deadlines and refunds for a small shop ([`Config`]) and
//! either proves the [`properties`] or prints a trace that breaks one
//! ([`trace`]).
//!
//! What is modelled, and how:
//! - **JetStream** as the platform uses it: each published event reaches
//!   every consumer whose filter subjects match it (read from `nats/`), in
//!   any order, and each delivery may come twice (its ack was lost). An
//!   event in an outbox not yet relayed is one not yet delivered, so the
//!   outbox needs no state of its own; a republished row keeps its message
//!   id, so it is the same message.
//! - **Inboxes** drop a message their consumer handled before.
//! - **Handlers** of svc-order and svc-inventory are one transaction each
//!   with their inbox row (under the row locks), so a second copy changes
//!   nothing there, and a crash between their commit and the ack is a
//!   redelivery. svc-payment's handlers (of a payment, of a refund) span
//!   several transactions with provider calls between them; a second copy
//!   runs beside the first, and a crash loses the handler in progress,
//!   whose message comes again.
//! - **The provider** keeps one ledger line per idempotency key: the intent
//!   made under it, moved only as the emulator's state machine moves it
//!   ([`shop_provider::domain::decide`], and
//!   [`shop_provider::domain::settle_refund`] for refunds)
//!   (the card pays, is declined, waits for the customer's 3-D Secure, who
//!   authenticates, fails or never acts, or processes and settles either
//!   way at any time; a cancelled intent never moves again, a succeeded
//!   one is refunded, not cancelled), and the money given back of it. A
//!   void cancels an intent, refunds what is left of a capture, or
//!   forecloses a key never used. A refund of a confirmed order is one
//!   provider refund per attempt's key, pending until the provider settles
//!   it (and, a fault, perhaps fails it); the model's provider gives back
//!   whatever it is asked, so that no more than was captured is the shop's
//!   to ensure. The provider may be unavailable and lose an answer (after
//!   acting, or before), and answers a charge with its intent as it
//!   stands.
//! - **Webhooks** name only a charge: whatever the provider changes sends
//!   one, which may be lost or come twice (those on their way at once are
//!   one: they differ in nothing svc-payment uses, so their order does not
//!   matter). svc-payment handles one at a time per charge: it reads the
//!   charge and its pending refunds from the provider, then decides on
//!   what it read ([`svc_payment::domain::Input::Found`]), which may be
//!   stale by then. **Reconciliation** reads a charge at any time, so a
//!   lost webhook costs only time; a round is slow and rare beside a
//!   handler, so it reads a payment no handler is busy with and decides at
//!   once.
//! - **Time** only as order: the order deadline sweep may find an
//!   unsettled order at any time; a reservation passes its deadline at any
//!   time (which `inventory.reserved` then carries as expired), and the
//!   expiry sweeper may release it any time after. The two deadlines are
//!   not ordered against each other, which only allows more behaviours.
//! - **A rival order** ([`world::Rival`]) is an order reduced to its
//!   reservation, racing the full orders for the stock.
//! - **Refunds**: an admin asks svc-order to refund a confirmed order,
//!   all that is left or some units, which svc-order plans and settles
//!   with its own functions ([`svc_order::refunds::Refundable::plan`],
//!   [`svc_order::refunds::Refundable::settle`]); `orders.refund_requested`
//!   reaches svc-payment, whose `payments.refunded` or
//!   `payments.refund_failed` reaches svc-order. An order's total is one
//!   unit of money per unit bought.
//! - **Faults** are budgets per card ([`Scope`]): each card is explored
//!   with its own.
//!
//! Not modelled: SQL itself (the store applies a decision as one
//! transaction, which is what the model assumes), message contents other
//! than their kind, timing and throughput, more than one SKU, a refund's
//! restock, svc-cart and svc-notify.

pub mod properties;
pub mod trace;
pub mod world;

use shop_provider::domain as provider;
use shop_runtime::{
    topology,
    values::{Currency, Money, Quantity, Sku},
};
use stateright::{Model, Property};
use svc_inventory::domain::{self as inventory, ReleaseReason};
use svc_order::{
    domain::{self as order, Heard},
    refunds::{self as order_refunds, Outcome, Settlement},
};
use svc_payment::{domain as payment, refund_saga::REFUND_ATTEMPTS, refunds};

use world::{AtProvider, Intent, Ledger, Order, Origin, Pending, Refund, RefundNo, Stage, Task};
pub use world::{Card, Consumer, Event, Msg, OrderNo, Participant, State};

/// A rule of the platform swapped for a known-wrong one, to prove that the
/// checker finds what it must.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mutation {
    /// The rules as they run.
    #[default]
    None,
    /// The order confirms on `payments.succeeded` instead of
    /// `inventory.committed`, racing the reservation's expiry.
    ConfirmOnPaymentSucceeded,
    /// Inventory reads the reservation without its row lock, so a release
    /// and a commit both act on what they read.
    ReleaseWithoutLock,
    /// A payment being voided is charged again under a new key when its
    /// `inventory.reserved` comes back, as a retry that starts a new
    /// attempt would.
    ChargeAfterVoid,
    /// A payment whose charge waits (processing, or for the customer) is
    /// charged again under a new key when its `inventory.reserved` comes
    /// back, as if waiting were an answer lost.
    ChargeWhileAwaiting,
    /// An admin may ask a refund of the order's whole total whatever its
    /// earlier refunds took.
    RefundBeyondWhatIsLeft,
}

impl Mutation {
    pub const ALL: [Self; 6] = [
        Self::None,
        Self::ConfirmOnPaymentSucceeded,
        Self::ReleaseWithoutLock,
        Self::ChargeAfterVoid,
        Self::ChargeWhileAwaiting,
        Self::RefundBeyondWhatIsLeft,
    ];
}

/// The shop the checker explores.
#[derive(Debug, Clone)]
pub struct Config {
    /// Units each order buys of the one SKU.
    pub orders: Vec<i32>,
    /// Units each rival order buys: an order abstracted to its reservation
    /// ([`world::Rival`]).
    pub rivals: Vec<i32>,
    /// Units of the SKU on hand.
    pub stock: i64,
    /// The cards the orders may pay with, each with what is explored with
    /// it. Every combination of cards is explored; orders paying with
    /// different cards get the least of their scopes.
    pub cards: Vec<(Card, Scope)>,
    /// `PAYMENT_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// Refunds an admin may ask of each confirmed order.
    pub refunds: u8,
    /// Pending refunds the provider fails, in all (the emulator's never
    /// fail; a real provider's may).
    pub refund_failures: u8,
    pub mutation: Mutation,
}

/// The faults, and the webhooks, explored with a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// Whether each delivery, and each webhook, may come twice.
    pub duplicates: bool,
    /// Crashes per participant.
    pub crashes: u8,
    /// Provider calls refused as unavailable, in all.
    pub outages: u8,
    /// Provider answers lost, in all.
    pub lost_answers: u8,
    /// Whether the provider sends webhooks (reconciliation reads it
    /// either way).
    pub webhooks: bool,
}

impl Scope {
    /// Every delivery possibly twice, a crash per participant and a lost
    /// answer; no webhooks.
    pub const FAULTS: Self = Self {
        duplicates: true,
        crashes: 1,
        outages: 0,
        lost_answers: 1,
        webhooks: false,
    };

    /// Webhooks, each possibly lost or twice, and a lost answer.
    pub const WEBHOOKS: Self = Self {
        duplicates: false,
        crashes: 0,
        outages: 0,
        lost_answers: 1,
        webhooks: true,
    };

    /// What both explore.
    pub fn least(self, other: Self) -> Self {
        Self {
            duplicates: self.duplicates && other.duplicates,
            crashes: self.crashes.min(other.crashes),
            outages: self.outages.min(other.outages),
            lost_answers: self.lost_answers.min(other.lost_answers),
            webhooks: self.webhooks && other.webhooks,
        }
    }
}

impl Config {
    /// What CI checks: an order racing a rival for the last unit, and one
    /// refund of it once confirmed. The cards that settle in the charge's
    /// answer are explored with [`Scope::FAULTS`], the cards that wait (3-D
    /// Secure, processing) with [`Scope::WEBHOOKS`].
    pub fn ci() -> Self {
        Self {
            orders: vec![1],
            rivals: vec![1],
            stock: 1,
            cards: vec![
                (Card::Ok, Scope::FAULTS),
                (Card::Declined, Scope::FAULTS),
                (Card::ThreeDs, Scope::WEBHOOKS),
                (Card::Async, Scope::WEBHOOKS),
            ],
            max_attempts: 2,
            refunds: 1,
            refund_failures: 0,
            mutation: Mutation::None,
        }
    }

    /// More: the cards that settle at once with two crashes per
    /// participant, two outages and two lost answers, and three timeouts
    /// before a void; the cards that wait with a crash per participant as
    /// well; and a pending refund the provider fails.
    pub fn large() -> Self {
        let settles = Scope {
            crashes: 2,
            outages: 2,
            lost_answers: 2,
            ..Scope::FAULTS
        };
        let waits = Scope {
            crashes: 1,
            ..Scope::WEBHOOKS
        };
        Self {
            cards: vec![
                (Card::Ok, settles),
                (Card::Declined, settles),
                (Card::ThreeDs, waits),
                (Card::Async, waits),
            ],
            max_attempts: 3,
            refund_failures: 1,
            ..Self::ci()
        }
    }

    /// Every card explored with `scope`.
    pub fn scoped(self, scope: Scope) -> Self {
        Self {
            cards: self.cards.into_iter().map(|(card, _)| (card, scope)).collect(),
            ..self
        }
    }

    pub fn with(self, mutation: Mutation) -> Self {
        Self { mutation, ..self }
    }
}

/// The model: a [`Config`] and the routes of its events.
#[derive(Debug, Clone)]
pub struct Shop {
    pub config: Config,
    /// The consumers that hear each subject.
    routes: Vec<(&'static str, Vec<Consumer>)>,
}

/// What the checker may do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A consumer gets a message; `duplicate`: its ack will be lost, so it
    /// comes again.
    Deliver {
        consumer: Consumer,
        msg: Msg,
        duplicate: bool,
    },
    /// The customer asks to cancel (`CancelOrder`).
    Cancel(OrderNo),
    /// The order's reservation passes its deadline.
    Tick(OrderNo),
    /// A rival order's reservation hears a trigger.
    Rival {
        rival: u8,
        trigger: inventory::Trigger,
    },
    /// The order deadline sweep finds the order.
    Overdue(OrderNo),
    /// The expiry sweeper finds the order's reservation.
    Expire(OrderNo),
    /// The provider gets a handler's call.
    Call {
        task: Task,
        outcome: CallOutcome,
    },
    /// A handler takes its next step.
    Step(Task),
    Crash(Participant),
    /// A webhook about the order's charge reaches svc-payment, which reads
    /// the charge from the provider; or it is lost.
    Webhook {
        order: OrderNo,
        fate: Fate,
    },
    /// Reconciliation reads the order's charge from the provider.
    Reconcile(OrderNo),
    /// The intent under the order's key `key` moves by itself: the
    /// customer authenticates or fails it, or its processing settles.
    Provider {
        order: OrderNo,
        key: u8,
        input: provider::Input,
    },
    /// The provider settles attempt `attempt` of a pending refund: it went
    /// through, or (a fault) failed.
    RefundSettles {
        order: OrderNo,
        refund: RefundNo,
        attempt: u8,
        succeeded: bool,
    },
    /// An admin asks a refund of `amount` of a confirmed order.
    RefundOrder {
        order: OrderNo,
        amount: u8,
    },
}

/// How the provider treats a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// Acts and answers.
    Answered,
    /// Refuses: acts not, and says so.
    Unavailable,
    /// Acts, but the answer never comes (a timeout).
    LostAfter,
    /// Never gets the call (a timeout too).
    LostBefore,
}

/// What becomes of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fate {
    Delivered,
    /// Delivered, and its 200 lost: it comes again.
    Duplicated,
    Lost,
}

/// What became of a delivery.
enum Handled {
    Ack,
    Retry,
    Continue(Stage),
}

impl Shop {
    /// The model of `config`, its routes read from the platform's consumer
    /// declarations.
    pub fn new(config: Config) -> Self {
        let mut routes: Vec<(&'static str, Vec<Consumer>)> = Event::KINDS
            .iter()
            .map(|&event| {
                let subject = format!("{}.*", event.subject());
                let hearing = Consumer::ALL
                    .into_iter()
                    .filter(|c| {
                        topology::consumer(c.name())
                            .unwrap_or_else(|e| panic!("consumer {} is not declared: {e}", c.name()))
                            .config
                            .filter_subjects
                            .contains(&subject)
                    })
                    .collect();
                (event.subject(), hearing)
            })
            .collect();
        if config.mutation == Mutation::ConfirmOnPaymentSucceeded {
            for (subject, hearing) in &mut routes {
                if *subject == Event::PaymentSucceeded.subject() {
                    hearing.push(Consumer::OrderPayments);
                }
            }
        }
        Self { config, routes }
    }

    fn quantity(&self, o: OrderNo) -> Quantity {
        Quantity::new(self.config.orders[usize::from(o)]).expect("a valid quantity in the configuration")
    }

    fn publish(&self, state: &mut State, event: Event, order: OrderNo) {
        let msg = Msg { event, order };
        let hearing = self
            .routes
            .iter()
            .find(|(subject, _)| *subject == event.subject())
            .map(|(_, c)| c);
        for &consumer in hearing.into_iter().flatten() {
            // A republished message has the same id: JetStream keeps one.
            state.network.entry((consumer, msg)).or_insert(Pending {
                copies: 1,
                duplicated: false,
            });
        }
    }

    /// Applies an order trigger as svc-order's saga does.
    fn order_trigger(&self, state: &mut State, o: OrderNo, trigger: order::Trigger) {
        let record = &mut state.orders[usize::from(o)];
        let order::Decision::Move(to) = order::decide(record.status, trigger) else {
            return;
        };
        record.status = to;
        if to.is_terminal() && record.settled.is_none() {
            record.settled = Some(to);
        }
        match to {
            order::Status::Confirmed => self.publish(state, Event::OrderConfirmed, o),
            order::Status::Cancelled(_) => self.publish(state, Event::OrderCancelled, o),
            // Nothing published on the way (nor, once svc-order refunds,
            // for a refunded order: svc-payment announces those).
            _ => {}
        }
    }

    fn order_hears(&self, state: &mut State, consumer: Consumer, msg: Msg) -> Handled {
        let heard = match msg.event {
            Event::InventoryReserved => Heard::InventoryReserved,
            Event::InventoryRejected => Heard::InventoryRejected,
            Event::InventoryCommitted => Heard::InventoryCommitted,
            Event::InventoryReleased(reason) => Heard::InventoryReleased {
                expired: reason == ReleaseReason::Expired,
            },
            Event::PaymentFailed => Heard::PaymentFailed,
            Event::PaymentAwaiting(wait) => Heard::PaymentAwaiting {
                action: wait == payment::Wait::CustomerAction,
            },
            // Heard only under the mutation that confirms on it.
            Event::PaymentSucceeded => Heard::InventoryCommitted,
            Event::RefundSucceeded(r) => return self.refund_settled(state, consumer, msg, r, Outcome::Succeeded),
            Event::RefundFailed(r) => return self.refund_settled(state, consumer, msg, r, Outcome::Failed),
            _ => return Handled::Ack,
        };
        let Some(trigger) = heard.trigger() else {
            return Handled::Ack;
        };
        if state.inbox.insert((consumer, msg)) {
            self.order_trigger(state, msg.order, trigger);
        }
        Handled::Ack
    }

    /// svc-order's `settle_refund`: svc-payment's word on refund `r`
    /// settles it once, and the order hears it through `decide`; word that
    /// contradicts the refund, or of a refund it does not have, is parked.
    fn refund_settled(
        &self,
        state: &mut State,
        consumer: Consumer,
        msg: Msg,
        r: RefundNo,
        outcome: Outcome,
    ) -> Handled {
        let o = msg.order;
        if state.inbox.contains(&(consumer, msg)) {
            return Handled::Ack;
        }
        let record = &state.orders[usize::from(o)];
        let settlement = self.refundable(o, record, false).settle(refund_id(r), outcome);
        match settlement {
            Settlement::Settle { to, trigger } => {
                state.inbox.insert((consumer, msg));
                state.orders[usize::from(o)].refunds[usize::from(r)].ordered = to;
                self.order_trigger(state, o, trigger);
            }
            Settlement::Repeat => {
                state.inbox.insert((consumer, msg));
            }
            Settlement::Contradicts(_) | Settlement::Unknown => state.orders[usize::from(o)].parked = true,
        }
        Handled::Ack
    }

    /// The order's total, at one unit of money per unit bought.
    fn total(&self, o: OrderNo) -> u8 {
        u8::try_from(self.config.orders[usize::from(o)]).expect("a small quantity in the configuration")
    }

    /// `record` as svc-order's refunds see it (`forgetful`: without its
    /// refunds, as the mutation that refunds beyond what is left has it).
    fn refundable(&self, o: OrderNo, record: &Order, forgetful: bool) -> order_refunds::Refundable {
        let money = |minor: u8| Money::new(currency(), i64::from(minor));
        let line = |units: u8| svc_order::domain::PricedLine {
            sku: sku(),
            quantity: Quantity::new(i32::from(units)).expect("a refund of some units"),
            unit_price: money(1),
        };
        let refunds = match forgetful {
            true => Vec::new(),
            false => record
                .refunds
                .iter()
                .enumerate()
                .map(|(r, refund)| order_refunds::Refund {
                    refund_id: refund_id(r as RefundNo),
                    status: refund.ordered,
                    lines: vec![line(refund.amount)],
                    amount: money(refund.amount),
                })
                .collect(),
        };
        order_refunds::Refundable {
            status: record.status,
            lines: vec![line(self.total(o))],
            total: money(self.total(o)),
            refunds,
        }
    }

    /// What an admin's `RefundOrder` of `record` may give back, as
    /// svc-order plans it: all that is left, or some units of it.
    fn refunds_possible(&self, o: OrderNo, record: &Order) -> Vec<u8> {
        let refundable = self.refundable(o, record, self.config.mutation == Mutation::RefundBeyondWhatIsLeft);
        let sku = sku().as_str().to_owned();
        let mut amounts: Vec<u8> = (0..=self.total(o))
            .filter_map(|units| {
                let lines = match units {
                    0 => Vec::new(),
                    n => vec![(sku.clone(), i32::from(n))],
                };
                let request = order_refunds::validate_refund_order("refund", &lines, false).ok()?;
                let planned = refundable.plan(&request).ok()?;
                u8::try_from(planned.amount.minor).ok()
            })
            .collect();
        amounts.sort_unstable();
        amounts.dedup();
        amounts
    }

    fn hears(&self, state: &mut State, consumer: Consumer, msg: Msg) -> Handled {
        match consumer.participant() {
            Participant::Order => self.order_hears(state, consumer, msg),
            Participant::Inventory => self.inventory_hears(state, consumer, msg),
            Participant::Payment => self.payment_hears(state, consumer, msg),
        }
    }

    /// Whether the consumer's handler is one transaction (svc-order's and
    /// svc-inventory's are, unless a mutation splits them).
    fn atomic(&self, consumer: Consumer) -> bool {
        match consumer.participant() {
            Participant::Order => true,
            Participant::Inventory => self.config.mutation != Mutation::ReleaseWithoutLock,
            Participant::Payment => false,
        }
    }

    fn inventory_trigger(event: Event) -> Option<inventory::Trigger> {
        Some(match event {
            Event::OrderPlaced => inventory::Trigger::Placed,
            Event::OrderCancelled => inventory::Trigger::Release(ReleaseReason::OrderCancelled),
            Event::PaymentSucceeded => inventory::Trigger::PaymentSucceeded,
            Event::PaymentFailed => inventory::Trigger::Release(ReleaseReason::PaymentFailed),
            _ => return None,
        })
    }

    /// svc-inventory's `apply`: `current` is the reservation as read (under
    /// its row lock, the reservation as it is).
    fn inventory_apply(
        &self,
        state: &mut State,
        o: OrderNo,
        trigger: inventory::Trigger,
        current: Option<inventory::Status>,
    ) -> Handled {
        let quantity = self.quantity(o);
        let record = &mut state.orders[usize::from(o)];
        match inventory::decide(current, trigger) {
            inventory::Decision::Reserve => {
                let lines = [inventory::Line { sku: sku(), quantity }];
                let units = state.units;
                if inventory::hold(&lines, |_| Some(units)).is_ok() {
                    record.reservation = Some(inventory::Status::Held);
                    state.units = units.moved(inventory::Movement::Hold, quantity);
                    self.publish(state, Event::InventoryReserved, o);
                } else {
                    record.reservation = Some(inventory::Status::Rejected);
                    self.publish(state, Event::InventoryRejected, o);
                }
            }
            inventory::Decision::Move { to, units } => {
                record.reservation = Some(to);
                if let Some(movement) = units {
                    state.units = state.units.moved(movement, quantity);
                }
                match (to, trigger) {
                    (inventory::Status::Committed, _) => self.publish(state, Event::InventoryCommitted, o),
                    (_, inventory::Trigger::Release(reason)) => {
                        self.publish(state, Event::InventoryReleased(reason), o);
                    }
                    _ => {}
                }
            }
            inventory::Decision::Tombstone => record.reservation = Some(inventory::Status::Released),
            inventory::Decision::Ignore => {}
            inventory::Decision::NotYet => return Handled::Retry,
        }
        Handled::Ack
    }

    fn inventory_hears(&self, state: &mut State, consumer: Consumer, msg: Msg) -> Handled {
        let Some(trigger) = Self::inventory_trigger(msg.event) else {
            return Handled::Ack;
        };
        if state.inbox.contains(&(consumer, msg)) {
            return Handled::Ack;
        }
        let current = state.orders[usize::from(msg.order)].reservation;
        if self.config.mutation == Mutation::ReleaseWithoutLock && matches!(trigger, inventory::Trigger::Release(_)) {
            return Handled::Continue(Stage::Read(current));
        }
        let handled = self.inventory_apply(state, msg.order, trigger, current);
        if matches!(handled, Handled::Ack) {
            state.inbox.insert((consumer, msg));
        }
        handled
    }

    /// One transaction of svc-payment's payment handler: decide on `input`,
    /// apply. Only a delivery is claimed in the inbox.
    fn payment_step(&self, state: &mut State, origin: Origin, o: OrderNo, input: payment::Input) -> Handled {
        let claim = delivery(origin);
        let record = &mut state.orders[usize::from(o)];
        let current = record.payment;
        let mut decision = payment::decide(current, input, self.config.max_attempts);
        let charges_again = match self.config.mutation {
            Mutation::ChargeAfterVoid => matches!(current, Some(payment::Status::Voiding(_))),
            Mutation::ChargeWhileAwaiting => matches!(current, Some(payment::Status::Awaiting(_))),
            _ => false,
        };
        if charges_again && matches!(input, payment::Input::Reserved { .. }) {
            record.ledger.push(Ledger::untouched(record.total));
            decision = payment::Decision {
                to: Some(payment::Status::Pending { attempts: 0 }),
                publish: None,
                then: payment::Then::Call(payment::Call::Charge),
            };
        }
        if decision.then == payment::Then::Done && claim.is_some_and(|c| state.inbox.contains(&c)) {
            return Handled::Ack;
        }
        if let Some(to) = decision.to {
            if current.is_none() {
                // The payment's id: the provider-side idempotency key.
                record.ledger.push(Ledger::untouched(record.total));
            }
            record.payment = Some(to);
        }
        match (decision.publish, decision.to) {
            (Some(payment::Publish::Succeeded), _) => self.publish(state, Event::PaymentSucceeded, o),
            (Some(payment::Publish::Failed(_)), _) => self.publish(state, Event::PaymentFailed, o),
            (Some(payment::Publish::Refunded), _) => self.publish(state, Event::PaymentRefunded, o),
            (Some(payment::Publish::Awaiting), Some(payment::Status::Awaiting(wait))) => {
                self.publish(state, Event::PaymentAwaiting(wait), o);
            }
            (Some(payment::Publish::Awaiting), _) | (None, _) => {}
        }
        match decision.then {
            payment::Then::Done => {
                if let Some(claim) = claim {
                    state.inbox.insert(claim);
                }
                Handled::Ack
            }
            payment::Then::Retry(_) => Handled::Retry,
            // A payment is charged only by its order's events: a reading
            // that asked for a charge would be refused.
            payment::Then::Call(payment::Call::Charge) if claim.is_none() => Handled::Ack,
            payment::Then::Call(call) => Handled::Continue(Stage::Calling(call)),
        }
    }

    /// One transaction of svc-payment's refund handler: decide on `input`
    /// for refund `r`, apply.
    fn refund_step(
        &self,
        state: &mut State,
        origin: Origin,
        o: OrderNo,
        r: RefundNo,
        input: refunds::Input,
    ) -> Handled {
        let claim = delivery(origin);
        let refund = &mut state.orders[usize::from(o)].refunds[usize::from(r)];
        let decision = refunds::decide(refund.record, input, REFUND_ATTEMPTS);
        if decision.then == refunds::Then::Done && claim.is_some_and(|c| state.inbox.contains(&c)) {
            return Handled::Ack;
        }
        if let Some(to) = decision.to {
            refund.record = Some(to);
        }
        if let refunds::Then::Call { attempt } = decision.then {
            let keys = attempt as usize + 1;
            if refund.attempts.len() < keys {
                refund.attempts.resize(keys, AtProvider::Untouched);
            }
        }
        if let Some(publish) = decision.publish {
            refund.announced = Some(publish);
            let event = match publish {
                refunds::Publish::Refunded => Event::RefundSucceeded(r),
                refunds::Publish::Failed => Event::RefundFailed(r),
            };
            self.publish(state, event, o);
        }
        match decision.then {
            refunds::Then::Done => {
                if let Some(claim) = claim {
                    state.inbox.insert(claim);
                }
                Handled::Ack
            }
            refunds::Then::Retry(_) => Handled::Retry,
            refunds::Then::Call { attempt } => Handled::Continue(Stage::RefundCalling { refund: r, attempt }),
        }
    }

    fn payment_hears(&self, state: &mut State, consumer: Consumer, msg: Msg) -> Handled {
        let record = &state.orders[usize::from(msg.order)];
        let origin = Origin::Delivery(consumer, msg);
        let input = match msg.event {
            Event::InventoryReserved => payment::Input::Reserved {
                expired: record.expired,
            },
            Event::OrderCancelled => payment::Input::Cancelled,
            Event::OrderRefundRequested(r) => {
                // Recorded against the order's captured payment.
                let captured = record.refunds[usize::from(r)].record.is_some()
                    || record.payment == Some(payment::Status::Succeeded);
                return self.refund_step(state, origin, msg.order, r, refunds::Input::Requested { captured });
            }
            _ => return Handled::Ack,
        };
        self.payment_step(state, origin, msg.order, input)
    }

    /// The provider's side of a payment's call under its current key.
    fn provider_call(record: &mut Order, call: payment::Call, acts: bool, webhooks: bool) -> payment::Input {
        let card = record.card;
        let line = record
            .ledger
            .last_mut()
            .expect("a call is made for a payment with a key");
        let mut moved = false;
        let answer = match call {
            payment::Call::Charge => {
                if acts
                    && line.intent == Intent::Untouched
                    && let provider::Decision::Move { to, .. } = provider::confirm(card.provider())
                {
                    line.intent = Intent::Made(to);
                    moved = true;
                    if to == provider::Status::Succeeded {
                        record.captures += 1;
                    }
                }
                payment::Input::Charged(match line.intent {
                    Intent::Made(provider::Status::Succeeded) => payment::ChargeAnswer::Succeeded,
                    Intent::Made(provider::Status::Processing) => {
                        payment::ChargeAnswer::Awaiting(payment::Wait::Processing)
                    }
                    Intent::Made(provider::Status::RequiresAction) => {
                        payment::ChargeAnswer::Awaiting(payment::Wait::CustomerAction)
                    }
                    // Declined, cancelled by a void meanwhile, or never to
                    // be made under this key.
                    Intent::Made(provider::Status::RequiresPaymentMethod | provider::Status::Canceled)
                    | Intent::Foreclosed
                    | Intent::Untouched => payment::ChargeAnswer::Declined,
                })
            }
            // `refund_or_void`: cancel what is not captured, refund what is
            // left of a capture, foreclose a key never used.
            payment::Call::Void => {
                if acts {
                    match line.intent {
                        Intent::Untouched => line.intent = Intent::Foreclosed,
                        Intent::Foreclosed => {}
                        Intent::Made(provider::Status::Succeeded) => {
                            if line.refunded < line.amount {
                                line.refunded = line.amount;
                                line.voided = true;
                                moved = true;
                            }
                        }
                        Intent::Made(status) => {
                            if let provider::Decision::Move { to, .. } =
                                provider::decide(status, provider::Input::Cancel)
                            {
                                line.intent = Intent::Made(to);
                                line.voided = true;
                                moved = true;
                            }
                        }
                    }
                }
                payment::Input::Voided(payment::VoidAnswer::Done)
            }
        };
        if moved && webhooks {
            record.notify();
        }
        answer
    }

    /// The provider's side of attempt `attempt` of refund `r`, on the
    /// payment's charge. The model's provider gives back whatever it is
    /// asked of a captured charge (the emulator, like a real provider,
    /// refuses more than is left): the bound checked is the shop's own.
    fn provider_refund(record: &mut Order, r: RefundNo, attempt: u32, acts: bool, webhooks: bool) -> refunds::Answer {
        let refund = &mut record.refunds[usize::from(r)];
        let amount = refund.amount;
        let at = &mut refund.attempts[attempt as usize];
        let Some(line) = record.ledger.last_mut() else {
            return refunds::Answer::Unanswered;
        };
        if acts && *at == AtProvider::Untouched {
            if line.intent == Intent::Made(provider::Status::Succeeded) {
                *at = AtProvider::Pending;
                line.refunded = line.refunded.saturating_add(amount);
            } else {
                // Refused: only a captured charge is refunded.
                *at = AtProvider::Failed;
            }
        }
        let answer = at.answer();
        if answer == refunds::Answer::Pending && acts && webhooks {
            record.notify();
        }
        answer
    }

    /// What svc-payment would decide on, reading `record`'s charges and
    /// pending refunds from the provider now.
    fn readings(record: &Order) -> Vec<Stage> {
        let mut found: Vec<Stage> = record
            .ledger
            .iter()
            .filter_map(Ledger::standing)
            .map(|standing| Stage::Answered(payment::Input::Found(standing)))
            .collect();
        for (r, refund) in record.refunds.iter().enumerate() {
            if let Some(refunds::Status::Pending { attempt }) = refund.record {
                found.push(Stage::RefundAnswered {
                    refund: r as RefundNo,
                    input: refunds::Input::Provider(refund.attempts[attempt as usize].answer()),
                });
            }
        }
        found
    }

    /// Whether deciding on `stage` now would change anything of `record`'s.
    fn changes(&self, record: &Order, stage: Stage) -> bool {
        match stage {
            Stage::Answered(input) => {
                let d = payment::decide(record.payment, input, self.config.max_attempts);
                d.to.is_some_and(|to| Some(to) != record.payment)
                    || d.publish.is_some()
                    || d.then != payment::Then::Done
            }
            Stage::RefundAnswered { refund, input } => {
                let current = record.refunds[usize::from(refund)].record;
                let d = refunds::decide(current, input, REFUND_ATTEMPTS);
                d.to.is_some_and(|to| Some(to) != current) || d.publish.is_some() || d.then != refunds::Then::Done
            }
            Stage::Calling(_) | Stage::RefundCalling { .. } | Stage::Read(_) => false,
        }
    }

    /// svc-payment reads `o`'s charges and pending refunds from the
    /// provider. A webhook's reading is decided later, on whatever the
    /// payment has become by then; a reconciliation round is slow and rare
    /// beside a handler, so it reads a payment no handler is busy with, and
    /// decides at once on what would change something.
    fn read(&self, state: &mut State, o: OrderNo, origin: Origin) {
        let stages = Self::readings(&state.orders[usize::from(o)]);
        if origin == Origin::Webhook {
            for stage in stages {
                state.tasks.push(Task {
                    origin,
                    order: o,
                    stage,
                });
            }
            state.tasks.sort();
            return;
        }
        for stage in stages {
            if !self.changes(&state.orders[usize::from(o)], stage) {
                continue;
            }
            let handled = match stage {
                Stage::Answered(input) => self.payment_step(state, origin, o, input),
                Stage::RefundAnswered { refund, input } => self.refund_step(state, origin, o, refund, input),
                Stage::Calling(_) | Stage::RefundCalling { .. } | Stage::Read(_) => Handled::Ack,
            };
            Self::finish(state, origin, o, handled);
        }
    }

    /// Whether svc-payment is busy with `o`: a handler of its payment or
    /// refunds in progress.
    fn busy(state: &State, o: OrderNo) -> bool {
        state
            .tasks
            .iter()
            .any(|t| t.order == o && t.participant() == Participant::Payment)
    }

    /// Whether a reconciliation round would change something of `o`'s.
    fn reconciles(&self, state: &State, o: OrderNo) -> bool {
        let record = &state.orders[usize::from(o)];
        !Self::busy(state, o)
            && Self::readings(record)
                .into_iter()
                .any(|stage| self.changes(record, stage))
    }

    /// Nothing left that anyone does by themselves: nothing in flight, no
    /// charge processing, no refund pending at the provider, nothing a
    /// reconciliation would change.
    pub fn at_rest(&self, state: &State) -> bool {
        state.nothing_in_flight()
            && state.orders.iter().all(|record| {
                record
                    .ledger
                    .iter()
                    .all(|l| l.intent != Intent::Made(provider::Status::Processing))
                    && record
                        .refunds
                        .iter()
                        .all(|r| !r.attempts.contains(&AtProvider::Pending))
                    && !Self::readings(record)
                        .into_iter()
                        .any(|stage| self.changes(record, stage))
            })
    }

    /// Hands `delivery` back to JetStream: it comes again (and, to bound
    /// the model, not twice more).
    fn redeliver(state: &mut State, origin: Origin) {
        if let Origin::Delivery(consumer, msg) = origin {
            state
                .network
                .entry((consumer, msg))
                .and_modify(|p| p.copies += 1)
                .or_insert(Pending {
                    copies: 1,
                    duplicated: true,
                });
        }
    }

    /// What follows a handler's step on `order` (a webhook's or
    /// reconciliation's retry is the next round's reading).
    fn finish(state: &mut State, origin: Origin, order: OrderNo, handled: Handled) {
        match handled {
            Handled::Ack => {}
            Handled::Retry => Self::redeliver(state, origin),
            Handled::Continue(stage) => state.tasks.push(Task { origin, order, stage }),
        }
        state.tasks.sort();
    }
}

fn delivery(origin: Origin) -> Option<(Consumer, Msg)> {
    match origin {
        Origin::Delivery(consumer, msg) => Some((consumer, msg)),
        Origin::Expiry | Origin::Webhook | Origin::Reconciliation => None,
    }
}

/// Everything a rival's reservation may hear.
const RIVAL_TRIGGERS: [inventory::Trigger; 5] = [
    inventory::Trigger::Placed,
    inventory::Trigger::PaymentSucceeded,
    inventory::Trigger::Release(ReleaseReason::Expired),
    inventory::Trigger::Release(ReleaseReason::PaymentFailed),
    inventory::Trigger::Release(ReleaseReason::OrderCancelled),
];

/// What may happen to an intent by itself.
const PROVIDER_INPUTS: [provider::Input; 4] = [
    provider::Input::Authenticated { passed: true },
    provider::Input::Authenticated { passed: false },
    provider::Input::Settled(provider::Settlement::Succeeded),
    provider::Input::Settled(provider::Settlement::Declined),
];

/// The SKU every order buys.
fn sku() -> Sku {
    Sku::parse("SKU-LAST-1").expect("a valid SKU")
}

fn currency() -> Currency {
    Currency::parse("EUR").expect("a valid currency")
}

/// The id svc-order gives the order's refund `r`.
fn refund_id(r: RefundNo) -> uuid::Uuid {
    uuid::Uuid::from_u128(u128::from(r) + 1)
}

fn remove_one(tasks: &mut Vec<Task>, task: &Task) -> bool {
    match tasks.iter().position(|t| t == task) {
        Some(i) => {
            tasks.remove(i);
            true
        }
        None => false,
    }
}

impl Model for Shop {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let n = self.config.orders.len();
        let mut shops: Vec<Vec<(Card, Scope)>> = vec![Vec::new()];
        for _ in 0..n {
            shops = shops
                .into_iter()
                .flat_map(|prefix| {
                    self.config.cards.iter().map(move |&card| {
                        let mut next = prefix.clone();
                        next.push(card);
                        next
                    })
                })
                .collect();
        }
        shops
            .into_iter()
            .filter_map(|cards| {
                let scope = cards.iter().map(|&(_, scope)| scope).reduce(Scope::least)?;
                let mut state = State {
                    orders: cards
                        .into_iter()
                        .enumerate()
                        .map(|(o, (card, _))| Order::new(card, self.total(o as OrderNo)))
                        .collect(),
                    rivals: self
                        .config
                        .rivals
                        .iter()
                        .map(|&quantity| world::Rival {
                            quantity,
                            reservation: None,
                        })
                        .collect(),
                    units: inventory::Units {
                        on_hand: self.config.stock,
                        reserved: 0,
                    },
                    network: Default::default(),
                    inbox: Default::default(),
                    tasks: Vec::new(),
                    duplicates: scope.duplicates,
                    webhooks: scope.webhooks,
                    crashes: [scope.crashes; 3],
                    outages: scope.outages,
                    lost_answers: scope.lost_answers,
                    refund_failures: self.config.refund_failures,
                };
                // Each order was placed: `orders.placed` is in its outbox.
                for o in 0..n {
                    self.publish(&mut state, Event::OrderPlaced, o as OrderNo);
                }
                Some(state)
            })
            .collect()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for (&(consumer, msg), pending) in &state.network {
            actions.push(Action::Deliver {
                consumer,
                msg,
                duplicate: false,
            });
            // A handler that is one transaction with its inbox row meets
            // that row in a later copy, which changes nothing: only
            // svc-payment's deliveries (or, under a mutation, inventory's)
            // come twice to any effect.
            if state.duplicates && !pending.duplicated && !self.atomic(consumer) {
                actions.push(Action::Deliver {
                    consumer,
                    msg,
                    duplicate: true,
                });
            }
        }
        for (i, record) in state.orders.iter().enumerate() {
            let o = i as OrderNo;
            let unsettled = !record.status.is_terminal();
            let held = record.reservation == Some(inventory::Status::Held);
            if unsettled && !record.cancel_asked {
                actions.push(Action::Cancel(o));
            }
            let reserved_in_flight = state
                .network
                .keys()
                .any(|(_, m)| m.order == o && m.event == Event::InventoryReserved);
            if !record.expired && (held || reserved_in_flight) {
                actions.push(Action::Tick(o));
            }
            if unsettled {
                actions.push(Action::Overdue(o));
            }
            let sweeping = state.tasks.iter().any(|t| t.origin == Origin::Expiry && t.order == o);
            if record.expired && held && !sweeping {
                actions.push(Action::Expire(o));
            }
            // One webhook handled at a time per charge: the next waits
            // for the reading in progress.
            let reading = state.tasks.iter().any(|t| t.order == o && t.origin == Origin::Webhook);
            if let Some(webhook) = record.webhook
                && !reading
            {
                actions.push(Action::Webhook {
                    order: o,
                    fate: Fate::Delivered,
                });
                if state.duplicates && !webhook.duplicated {
                    actions.push(Action::Webhook {
                        order: o,
                        fate: Fate::Duplicated,
                    });
                }
                actions.push(Action::Webhook {
                    order: o,
                    fate: Fate::Lost,
                });
            }
            if self.reconciles(state, o) {
                actions.push(Action::Reconcile(o));
            }
            for (k, line) in record.ledger.iter().enumerate() {
                let Intent::Made(status) = line.intent else { continue };
                for input in PROVIDER_INPUTS {
                    if matches!(provider::decide(status, input), provider::Decision::Move { .. }) {
                        actions.push(Action::Provider {
                            order: o,
                            key: k as u8,
                            input,
                        });
                    }
                }
            }
            for (r, refund) in record.refunds.iter().enumerate() {
                for (a, at) in refund.attempts.iter().enumerate() {
                    if *at != AtProvider::Pending {
                        continue;
                    }
                    let settle = |succeeded| Action::RefundSettles {
                        order: o,
                        refund: r as RefundNo,
                        attempt: a as u8,
                        succeeded,
                    };
                    actions.push(settle(true));
                    if state.refund_failures > 0 {
                        actions.push(settle(false));
                    }
                }
            }
            // (svc-order refunds only these: `plan` says so too, but slower.)
            let refundable = matches!(
                record.status,
                order::Status::Confirmed | order::Status::PartiallyRefunded
            );
            if refundable && record.refunds.len() < usize::from(self.config.refunds) {
                for amount in self.refunds_possible(o, record) {
                    actions.push(Action::RefundOrder { order: o, amount });
                }
            }
        }
        for (i, rival) in state.rivals.iter().enumerate() {
            for trigger in RIVAL_TRIGGERS {
                if matches!(
                    inventory::decide(rival.reservation, trigger),
                    inventory::Decision::Reserve | inventory::Decision::Move { .. } | inventory::Decision::Tombstone
                ) {
                    actions.push(Action::Rival {
                        rival: i as u8,
                        trigger,
                    });
                }
            }
        }
        let mut previous = None;
        for task in &state.tasks {
            if previous == Some(task) {
                continue;
            }
            previous = Some(task);
            match task.stage {
                Stage::Calling(_) | Stage::RefundCalling { .. } => {
                    actions.push(Action::Call {
                        task: *task,
                        outcome: CallOutcome::Answered,
                    });
                    if state.outages > 0 {
                        actions.push(Action::Call {
                            task: *task,
                            outcome: CallOutcome::Unavailable,
                        });
                    }
                    if state.lost_answers > 0 {
                        for outcome in [CallOutcome::LostAfter, CallOutcome::LostBefore] {
                            actions.push(Action::Call { task: *task, outcome });
                        }
                    }
                }
                Stage::Answered(_) | Stage::RefundAnswered { .. } | Stage::Read(_) => {
                    actions.push(Action::Step(*task));
                }
            }
        }
        for participant in Participant::ALL {
            if state.crashes[participant.index()] > 0 && state.tasks.iter().any(|t| t.participant() == participant) {
                actions.push(Action::Crash(participant));
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Deliver {
                consumer,
                msg,
                duplicate,
            } => {
                let pending = state.network.get_mut(&(consumer, msg))?;
                if duplicate {
                    pending.duplicated = true;
                } else {
                    pending.copies -= 1;
                    if pending.copies == 0 {
                        state.network.remove(&(consumer, msg));
                    }
                }
                let handled = self.hears(&mut state, consumer, msg);
                match handled {
                    // Nothing happened: the message waits as it did.
                    Handled::Retry => {
                        state
                            .network
                            .insert((consumer, msg), *last.network.get(&(consumer, msg))?);
                    }
                    handled => Self::finish(&mut state, Origin::Delivery(consumer, msg), msg.order, handled),
                }
            }
            Action::Cancel(o) => {
                state.orders[usize::from(o)].cancel_asked = true;
                self.order_trigger(&mut state, o, order::Trigger::CustomerCancel);
            }
            Action::Tick(o) => state.orders[usize::from(o)].expired = true,
            Action::Rival { rival, trigger } => {
                let units = state.units;
                let record = &mut state.rivals[usize::from(rival)];
                let quantity = Quantity::new(record.quantity).expect("a valid quantity in the configuration");
                match inventory::decide(record.reservation, trigger) {
                    inventory::Decision::Reserve => {
                        let lines = [inventory::Line { sku: sku(), quantity }];
                        if inventory::hold(&lines, |_| Some(units)).is_ok() {
                            record.reservation = Some(inventory::Status::Held);
                            state.units = units.moved(inventory::Movement::Hold, quantity);
                        } else {
                            record.reservation = Some(inventory::Status::Rejected);
                        }
                    }
                    inventory::Decision::Move { to, units: movement } => {
                        record.reservation = Some(to);
                        if let Some(movement) = movement {
                            state.units = units.moved(movement, quantity);
                        }
                    }
                    inventory::Decision::Tombstone => record.reservation = Some(inventory::Status::Released),
                    inventory::Decision::Ignore | inventory::Decision::NotYet => return None,
                }
            }
            Action::Overdue(o) => self.order_trigger(&mut state, o, order::Trigger::Overdue),
            Action::Expire(o) => {
                let expired = inventory::Trigger::Release(ReleaseReason::Expired);
                let current = state.orders[usize::from(o)].reservation;
                let handled = if self.config.mutation == Mutation::ReleaseWithoutLock {
                    Handled::Continue(Stage::Read(current))
                } else {
                    self.inventory_apply(&mut state, o, expired, current)
                };
                Self::finish(&mut state, Origin::Expiry, o, handled);
            }
            Action::Call { task, outcome } => {
                if !matches!(task.stage, Stage::Calling(_) | Stage::RefundCalling { .. })
                    || !remove_one(&mut state.tasks, &task)
                {
                    return None;
                }
                let acts = match outcome {
                    CallOutcome::Answered | CallOutcome::LostAfter => true,
                    CallOutcome::Unavailable | CallOutcome::LostBefore => false,
                };
                match outcome {
                    CallOutcome::Answered => {}
                    CallOutcome::Unavailable => state.outages -= 1,
                    CallOutcome::LostAfter | CallOutcome::LostBefore => state.lost_answers -= 1,
                }
                let webhooks = state.webhooks;
                let record = &mut state.orders[usize::from(task.order)];
                let stage = match task.stage {
                    Stage::Calling(call) => {
                        let answer = Self::provider_call(record, call, acts, webhooks);
                        Stage::Answered(match (outcome, call) {
                            (CallOutcome::Answered, _) => answer,
                            (CallOutcome::Unavailable, payment::Call::Charge) => {
                                payment::Input::Charged(payment::ChargeAnswer::Unavailable)
                            }
                            (_, payment::Call::Charge) => payment::Input::Charged(payment::ChargeAnswer::Timeout),
                            (_, payment::Call::Void) => payment::Input::Voided(payment::VoidAnswer::Failed),
                        })
                    }
                    Stage::RefundCalling { refund, attempt } => {
                        let answer = Self::provider_refund(record, refund, attempt, acts, webhooks);
                        let answer = match outcome {
                            CallOutcome::Answered => answer,
                            _ => refunds::Answer::Unanswered,
                        };
                        Stage::RefundAnswered {
                            refund,
                            input: refunds::Input::Provider(answer),
                        }
                    }
                    Stage::Answered(_) | Stage::RefundAnswered { .. } | Stage::Read(_) => return None,
                };
                Self::finish(&mut state, task.origin, task.order, Handled::Continue(stage));
            }
            Action::Step(task) => {
                if !remove_one(&mut state.tasks, &task) {
                    return None;
                }
                let handled = match task.stage {
                    Stage::Answered(input) => self.payment_step(&mut state, task.origin, task.order, input),
                    Stage::RefundAnswered { refund, input } => {
                        self.refund_step(&mut state, task.origin, task.order, refund, input)
                    }
                    Stage::Read(read) => {
                        let delivery = task.delivery();
                        let trigger = match delivery {
                            Some((_, msg)) => Self::inventory_trigger(msg.event)?,
                            None => inventory::Trigger::Release(ReleaseReason::Expired),
                        };
                        if delivery.is_some_and(|d| state.inbox.contains(&d)) {
                            Handled::Ack
                        } else {
                            let handled = self.inventory_apply(&mut state, task.order, trigger, read);
                            if let (Handled::Ack, Some(delivery)) = (&handled, delivery) {
                                state.inbox.insert(delivery);
                            }
                            handled
                        }
                    }
                    Stage::Calling(_) | Stage::RefundCalling { .. } => return None,
                };
                Self::finish(&mut state, task.origin, task.order, handled);
            }
            Action::Crash(participant) => {
                state.crashes[participant.index()] -= 1;
                let (lost, kept): (Vec<Task>, Vec<Task>) =
                    state.tasks.into_iter().partition(|t| t.participant() == participant);
                state.tasks = kept;
                for task in lost {
                    Self::redeliver(&mut state, task.origin);
                }
            }
            Action::Webhook { order: o, fate } => {
                let record = &mut state.orders[usize::from(o)];
                let webhook = record.webhook.as_mut()?;
                match fate {
                    Fate::Duplicated => webhook.duplicated = true,
                    Fate::Delivered | Fate::Lost => record.webhook = None,
                }
                if fate != Fate::Lost {
                    self.read(&mut state, o, Origin::Webhook);
                }
            }
            Action::Reconcile(o) => self.read(&mut state, o, Origin::Reconciliation),
            Action::Provider { order: o, key, input } => {
                let record = &mut state.orders[usize::from(o)];
                let line = record.ledger.get_mut(usize::from(key))?;
                let Intent::Made(status) = line.intent else {
                    return None;
                };
                let provider::Decision::Move { to, .. } = provider::decide(status, input) else {
                    return None;
                };
                line.intent = Intent::Made(to);
                if to == provider::Status::Succeeded {
                    record.captures += 1;
                }
                if state.webhooks {
                    record.notify();
                }
            }
            Action::RefundSettles {
                order: o,
                refund,
                attempt,
                succeeded,
            } => {
                let record = &mut state.orders[usize::from(o)];
                let refund = record.refunds.get_mut(usize::from(refund))?;
                let at = refund.attempts.get_mut(usize::from(attempt))?;
                if *at != AtProvider::Pending {
                    return None;
                }
                // The emulator's rule: a failed refund sent nothing back.
                match provider::settle_refund(provider::RefundStatus::Pending, !succeeded)? {
                    provider::RefundStatus::Succeeded => *at = AtProvider::Succeeded,
                    provider::RefundStatus::Failed => {
                        *at = AtProvider::Failed;
                        let amount = refund.amount;
                        if let Some(line) = record.ledger.last_mut() {
                            line.refunded = line.refunded.saturating_sub(amount);
                        }
                        state.refund_failures -= 1;
                    }
                    provider::RefundStatus::Pending => return None,
                }
                if state.webhooks {
                    state.orders[usize::from(o)].notify();
                }
            }
            Action::RefundOrder { order: o, amount } => {
                let record = &mut state.orders[usize::from(o)];
                let r = record.refunds.len() as RefundNo;
                record.refunds.push(Refund::new(amount));
                // Recorded with `orders.refund_requested` in svc-order's outbox.
                self.publish(&mut state, Event::OrderRefundRequested(r), o);
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::all()
    }
}
