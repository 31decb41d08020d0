//! The checkout saga as a model for the `stateright` model checker, built
//! on the decision functions the services run: svc-order's
//! [`svc_order::domain::decide`], svc-inventory's
//! [`svc_inventory::domain::decide`] and [`svc_inventory::domain::hold`],
//! svc-payment's [`svc_payment::domain::decide`].
//!
//! The checker enumerates every order of deliveries, duplicates, crashes,
//! provider answers, cancellations and deadlines for a small shop
//! ([`Config`]) and either proves the [`properties`] or prints the shortest
//! trace that breaks one ([`trace`]).
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
//!   (under the row locks); a crash between their commit and the ack is a
//!   redelivery, which the duplicates cover. svc-payment's handlers span
//!   several transactions with provider calls between them; a crash loses
//!   the handler in progress and its message comes again.
//! - **The provider** keeps one ledger entry per idempotency key: a charge
//!   takes money once per key, a void refunds it or makes sure none comes.
//!   It may be unavailable, lose an answer (after or before acting), and
//!   answers as the order's card says.
//! - **Time** only as order: the order deadline sweep may find an
//!   unsettled order at any time; a reservation passes its deadline at any
//!   time (which `inventory.reserved` then carries as expired), and the
//!   expiry sweeper may release it any time after. The two deadlines are
//!   not ordered against each other, which only allows more behaviours.
//! - **A rival order** ([`world::Rival`]) is an order reduced to its
//!   reservation, racing the full orders for the stock.
//!
//! Not modelled: SQL itself (the store applies a decision as one
//! transaction, which is what the model assumes), message contents other
//! than their kind, timing and throughput, more than one SKU.

pub mod properties;
pub mod trace;
pub mod world;

use shop_runtime::{topology, values::Quantity};
use stateright::{Model, Property};
use svc_inventory::domain::{self as inventory, ReleaseReason};
use svc_order::domain::{self as order, Heard};
use svc_payment::domain as payment;

pub use world::{Card, Consumer, Event, Msg, OrderNo, Participant, State};
use world::{Ledger, Order, Pending, Stage, Task};

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
    /// The cards the orders may pay with (every combination is explored).
    pub cards: Vec<Card>,
    /// Whether each delivery may come twice.
    pub duplicates: bool,
    /// Crashes per participant.
    pub crashes: u8,
    /// Provider calls refused as unavailable, in all.
    pub outages: u8,
    /// Provider answers lost, in all.
    pub lost_answers: u8,
    /// `PAYMENT_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    pub mutation: Mutation,
}

impl Config {
    /// What CI checks: two orders racing for the last unit, each delivery
    /// possibly twice, one crash per participant, and every payment
    /// behaviour: cards that pay or are declined, an outage, a lost answer.
    pub fn ci() -> Self {
        Self {
            orders: vec![1],
            rivals: vec![1],
            stock: 1,
            cards: vec![Card::Ok, Card::Declined],
            duplicates: true,
            crashes: 1,
            outages: 1,
            lost_answers: 1,
            max_attempts: 2,
            mutation: Mutation::None,
        }
    }

    /// More faults: two crashes per participant, two outages, two lost
    /// answers, and three timeouts before a void.
    pub fn large() -> Self {
        Self {
            crashes: 2,
            outages: 2,
            lost_answers: 2,
            max_attempts: 3,
            ..Self::ci()
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
    /// The consumers that hear each event.
    routes: Vec<(Event, Vec<Consumer>)>,
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
        let mut routes: Vec<(Event, Vec<Consumer>)> = Event::ALL
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
                (event, hearing)
            })
            .collect();
        if config.mutation == Mutation::ConfirmOnPaymentSucceeded {
            for (event, hearing) in &mut routes {
                if *event == Event::PaymentSucceeded {
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
        let hearing = self.routes.iter().find(|(e, _)| *e == event).map(|(_, c)| c);
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
            order::Status::Pending
            | order::Status::Reserved(_)
            | order::Status::PartiallyRefunded
            | order::Status::Refunded => {}
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
            // Heard only under the mutation that confirms on it.
            Event::PaymentSucceeded => Heard::InventoryCommitted,
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

    /// One transaction of svc-payment's handler: decide on `input`, apply.
    fn payment_step(&self, state: &mut State, consumer: Consumer, msg: Msg, input: payment::Input) -> Handled {
        let record = &mut state.orders[usize::from(msg.order)];
        let current = record.payment;
        let mut decision = payment::decide(current, input, self.config.max_attempts);
        if self.config.mutation == Mutation::ChargeAfterVoid
            && matches!(current, Some(payment::Status::Voiding(_)))
            && matches!(input, payment::Input::Reserved { .. })
        {
            record.ledger.push(Ledger::Untouched);
            decision = payment::Decision {
                to: Some(payment::Status::Pending { attempts: 0 }),
                publish: None,
                then: payment::Then::Call(payment::Call::Charge),
            };
        }
        if decision.then == payment::Then::Done && state.inbox.contains(&(consumer, msg)) {
            return Handled::Ack;
        }
        if let Some(to) = decision.to {
            if current.is_none() {
                // The payment's id: the provider-side idempotency key.
                record.ledger.push(Ledger::Untouched);
            }
            record.payment = Some(to);
        }
        match decision.publish {
            Some(payment::Publish::Succeeded) => self.publish(state, Event::PaymentSucceeded, msg.order),
            Some(payment::Publish::Failed(_)) => self.publish(state, Event::PaymentFailed, msg.order),
            Some(payment::Publish::Refunded) => self.publish(state, Event::PaymentRefunded, msg.order),
            // The model's cards settle in the charge's answer: nothing waits.
            Some(payment::Publish::Awaiting) | None => {}
        }
        match decision.then {
            payment::Then::Done => {
                state.inbox.insert((consumer, msg));
                Handled::Ack
            }
            payment::Then::Retry(_) => Handled::Retry,
            payment::Then::Call(call) => Handled::Continue(Stage::Calling(call)),
        }
    }

    fn payment_hears(&self, state: &mut State, consumer: Consumer, msg: Msg) -> Handled {
        let input = match msg.event {
            Event::InventoryReserved => payment::Input::Reserved {
                expired: state.orders[usize::from(msg.order)].expired,
            },
            Event::OrderCancelled => payment::Input::Cancelled,
            _ => return Handled::Ack,
        };
        self.payment_step(state, consumer, msg, input)
    }

    /// The provider's side of a call under the payment's current key.
    fn provider(&self, record: &mut Order, call: payment::Call, acts: bool) -> payment::Input {
        let card = record.card;
        let entry = record
            .ledger
            .last_mut()
            .expect("a call is made for a payment with a key");
        match call {
            payment::Call::Charge => {
                if acts && *entry == Ledger::Untouched {
                    *entry = match card {
                        Card::Ok => Ledger::Captured,
                        Card::Declined => Ledger::Declined,
                    };
                    if *entry == Ledger::Captured {
                        record.captures += 1;
                    }
                }
                payment::Input::Charged(match entry {
                    Ledger::Captured | Ledger::Refunded => payment::ChargeAnswer::Succeeded,
                    _ => payment::ChargeAnswer::Declined,
                })
            }
            payment::Call::Void => {
                if acts {
                    *entry = match *entry {
                        Ledger::Untouched => Ledger::Voided,
                        Ledger::Captured => Ledger::Refunded,
                        settled => settled,
                    };
                }
                payment::Input::Voided(payment::VoidAnswer::Done)
            }
        }
    }

    /// Hands `delivery` back to JetStream: it comes again (and, to bound
    /// the model, not twice more).
    fn redeliver(state: &mut State, delivery: Option<(Consumer, Msg)>) {
        if let Some(delivery) = delivery {
            state
                .network
                .entry(delivery)
                .and_modify(|p| p.copies += 1)
                .or_insert(Pending {
                    copies: 1,
                    duplicated: true,
                });
        }
    }

    /// What follows a handler's step on `order`'s `delivery` (`None`: the
    /// expiry sweeper's).
    fn finish(state: &mut State, delivery: Option<(Consumer, Msg)>, order: OrderNo, handled: Handled) {
        match handled {
            Handled::Ack => {}
            Handled::Retry => Self::redeliver(state, delivery),
            Handled::Continue(stage) => state.tasks.push(Task { delivery, order, stage }),
        }
        state.tasks.sort();
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

/// The SKU every order buys.
fn sku() -> shop_runtime::values::Sku {
    shop_runtime::values::Sku::parse("SKU-LAST-1").expect("a valid SKU")
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
        let mut cards: Vec<Vec<Card>> = vec![Vec::new()];
        for _ in 0..n {
            cards = cards
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
        cards
            .into_iter()
            .map(|cards| {
                let mut state = State {
                    orders: cards.into_iter().map(Order::new).collect(),
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
                    crashes: [self.config.crashes; 3],
                    outages: self.config.outages,
                    lost_answers: self.config.lost_answers,
                };
                // Each order was placed: `orders.placed` is in its outbox.
                for o in 0..n {
                    self.publish(&mut state, Event::OrderPlaced, o as OrderNo);
                }
                state
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
            if self.config.duplicates && !pending.duplicated {
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
            let sweeping = state.tasks.iter().any(|t| t.delivery.is_none() && t.order == o);
            if record.expired && held && !sweeping {
                actions.push(Action::Expire(o));
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
                Stage::Calling(_) => {
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
                Stage::Answered(_) | Stage::Read(_) => actions.push(Action::Step(*task)),
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
                let mut handled = self.hears(&mut state, consumer, msg);
                if duplicate && self.atomic(consumer) {
                    // Its handler is one transaction with the inbox row: a
                    // copy that comes later meets that row as this one does
                    // now, so it comes now.
                    if let Some(pending) = state.network.get_mut(&(consumer, msg)) {
                        pending.copies -= 1;
                        if pending.copies == 0 {
                            state.network.remove(&(consumer, msg));
                        }
                    }
                    handled = match handled {
                        Handled::Ack => self.hears(&mut state, consumer, msg),
                        other => other,
                    };
                }
                match handled {
                    // Nothing happened: the message waits as it did.
                    Handled::Retry => {
                        state
                            .network
                            .insert((consumer, msg), *last.network.get(&(consumer, msg))?);
                    }
                    handled => Self::finish(&mut state, Some((consumer, msg)), msg.order, handled),
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
                Self::finish(&mut state, None, o, handled);
            }
            Action::Call { task, outcome } => {
                let Stage::Calling(call) = task.stage else {
                    return None;
                };
                if !remove_one(&mut state.tasks, &task) {
                    return None;
                }
                let record = &mut state.orders[usize::from(task.order)];
                let answer = match outcome {
                    CallOutcome::Answered => self.provider(record, call, true),
                    CallOutcome::Unavailable => {
                        state.outages -= 1;
                        match call {
                            payment::Call::Charge => payment::Input::Charged(payment::ChargeAnswer::Unavailable),
                            payment::Call::Void => payment::Input::Voided(payment::VoidAnswer::Failed),
                        }
                    }
                    CallOutcome::LostAfter | CallOutcome::LostBefore => {
                        state.lost_answers -= 1;
                        self.provider(record, call, outcome == CallOutcome::LostAfter);
                        match call {
                            payment::Call::Charge => payment::Input::Charged(payment::ChargeAnswer::Timeout),
                            payment::Call::Void => payment::Input::Voided(payment::VoidAnswer::Failed),
                        }
                    }
                };
                Self::finish(
                    &mut state,
                    task.delivery,
                    task.order,
                    Handled::Continue(Stage::Answered(answer)),
                );
            }
            Action::Step(task) => {
                if !remove_one(&mut state.tasks, &task) {
                    return None;
                }
                let handled = match (task.stage, task.delivery) {
                    (Stage::Answered(input), Some((consumer, msg))) => {
                        self.payment_step(&mut state, consumer, msg, input)
                    }
                    (Stage::Read(read), delivery) => {
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
                    _ => return None,
                };
                Self::finish(&mut state, task.delivery, task.order, handled);
            }
            Action::Crash(participant) => {
                state.crashes[participant.index()] -= 1;
                let (lost, kept): (Vec<Task>, Vec<Task>) =
                    state.tasks.into_iter().partition(|t| t.participant() == participant);
                state.tasks = kept;
                for task in lost {
                    Self::redeliver(&mut state, task.delivery);
                }
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::all()
    }
}
