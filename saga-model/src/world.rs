//! What the model's states are made of: the participants' records of each
//! order, the messages in flight, the handlers in progress, the provider's
//! ledger and what is left of each fault's budget.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use shop_proto::events::v1 as ev;
use shop_runtime::event::Event as _;
use svc_inventory::domain::{self as inventory, ReleaseReason};

use svc_order::domain as order;
use svc_payment::domain as payment;

/// An order's index in the configuration.
pub type OrderNo = u8;

/// The saga's events, as the platform publishes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    OrderPlaced,
    OrderConfirmed,
    OrderCancelled,
    InventoryReserved,
    InventoryRejected,
    InventoryCommitted,
    InventoryReleased(ReleaseReason),
    PaymentSucceeded,
    PaymentFailed,
    PaymentRefunded,
}

impl Event {
    /// Its subject without the key, from the platform's event declarations.
    pub fn subject(self) -> &'static str {
        match self {
            Self::OrderPlaced => ev::OrderPlaced::SUBJECT,
            Self::OrderConfirmed => ev::OrderConfirmed::SUBJECT,
            Self::OrderCancelled => ev::OrderCancelled::SUBJECT,
            Self::InventoryReserved => ev::InventoryReserved::SUBJECT,
            Self::InventoryRejected => ev::InventoryRejected::SUBJECT,
            Self::InventoryCommitted => ev::InventoryCommitted::SUBJECT,
            Self::InventoryReleased(_) => ev::InventoryReleased::SUBJECT,
            Self::PaymentSucceeded => ev::PaymentSucceeded::SUBJECT,
            Self::PaymentFailed => ev::PaymentFailed::SUBJECT,
            Self::PaymentRefunded => ev::PaymentRefunded::SUBJECT,
        }
    }

    pub const ALL: [Self; 12] = [
        Self::OrderPlaced,
        Self::OrderConfirmed,
        Self::OrderCancelled,
        Self::InventoryReserved,
        Self::InventoryRejected,
        Self::InventoryCommitted,
        Self::InventoryReleased(ReleaseReason::Expired),
        Self::InventoryReleased(ReleaseReason::PaymentFailed),
        Self::InventoryReleased(ReleaseReason::OrderCancelled),
        Self::PaymentSucceeded,
        Self::PaymentFailed,
        Self::PaymentRefunded,
    ];
}

/// One event about one order: its message id, which the outbox keeps
/// across republishing (`Nats-Msg-Id`) and the inboxes remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msg {
    pub event: Event,
    pub order: OrderNo,
}

/// The saga's durable consumers, each served by one participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Consumer {
    OrderInventory,
    OrderPayments,
    InventoryOrders,
    InventoryPayments,
    PaymentInventory,
    PaymentOrders,
}

impl Consumer {
    pub const ALL: [Self; 6] = [
        Self::OrderInventory,
        Self::OrderPayments,
        Self::InventoryOrders,
        Self::InventoryPayments,
        Self::PaymentInventory,
        Self::PaymentOrders,
    ];

    /// Its durable name, as the service that runs it names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::OrderInventory => svc_order::saga::INVENTORY_CONSUMER,
            Self::OrderPayments => svc_order::saga::PAYMENTS_CONSUMER,
            Self::InventoryOrders => svc_inventory::saga::ORDERS_CONSUMER,
            Self::InventoryPayments => svc_inventory::saga::PAYMENTS_CONSUMER,
            Self::PaymentInventory => svc_payment::saga::RESERVED_CONSUMER,
            Self::PaymentOrders => svc_payment::saga::CANCELLED_CONSUMER,
        }
    }

    pub fn participant(self) -> Participant {
        match self {
            Self::OrderInventory | Self::OrderPayments => Participant::Order,
            Self::InventoryOrders | Self::InventoryPayments => Participant::Inventory,
            Self::PaymentInventory | Self::PaymentOrders => Participant::Payment,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Participant {
    Order,
    Inventory,
    Payment,
}

impl Participant {
    pub const ALL: [Self; 3] = [Self::Order, Self::Inventory, Self::Payment];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The card an order pays with: what the provider answers a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Card {
    Ok,
    Declined,
}

/// What the provider holds under one idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ledger {
    /// Never called with this key.
    Untouched,
    /// Money taken, and standing.
    Captured,
    Declined,
    /// Voided before any charge: no charge can happen under this key.
    Voided,
    /// Captured, then given back.
    Refunded,
}

/// Where one order stands with every participant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Order {
    pub card: Card,
    pub status: order::Status,
    /// The first terminal status it reached.
    pub settled: Option<order::Status>,
    pub reservation: Option<inventory::Status>,
    pub payment: Option<payment::Status>,
    /// The provider's ledger, one entry per idempotency key the payment used.
    pub ledger: Vec<Ledger>,
    /// Charges that took money, ever.
    pub captures: u8,
    /// Past its reservation's deadline. (The order deadline may pass at any
    /// time: it is not ordered against the reservation's here, which only
    /// allows more behaviours.)
    pub expired: bool,
    pub cancel_asked: bool,
}

impl Order {
    pub fn new(card: Card) -> Self {
        Self {
            card,
            status: order::Status::Pending,
            settled: None,
            reservation: None,
            payment: None,
            ledger: Vec::new(),
            captures: 0,
            expired: false,
            cancel_asked: false,
        }
    }

    /// Money the provider holds for this order now.
    pub fn money_standing(&self) -> bool {
        self.ledger.contains(&Ledger::Captured)
    }
}

/// Where a handler that spans several steps stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Payment: committed a decision that names this call; not made yet.
    Calling(payment::Call),
    /// Payment: the provider answered; the next decision is not made yet.
    Answered(payment::Input),
    /// Inventory without the reservation lock (a mutation): read the
    /// reservation as this, not yet written.
    Read(Option<inventory::Status>),
}

/// A handler in progress: the message it handles stays unacknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Task {
    /// The delivery it handles (`None`: the expiry sweeper's).
    pub delivery: Option<(Consumer, Msg)>,
    pub order: OrderNo,
    pub stage: Stage,
}

impl Task {
    pub fn participant(&self) -> Participant {
        match self.stage {
            Stage::Calling(_) | Stage::Answered(_) => Participant::Payment,
            Stage::Read(_) => Participant::Inventory,
        }
    }
}

/// Deliveries waiting for one consumer's message: how many, and whether
/// its one duplicate was spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pending {
    pub copies: u8,
    pub duplicated: bool,
}

/// A rival order, abstracted to its reservation: it moves through every
/// sequence of triggers inventory's state machine takes, in any
/// interleaving, which covers whatever its saga could do to the stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rival {
    pub quantity: i32,
    pub reservation: Option<inventory::Status>,
}

/// A state of the whole system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    pub orders: Vec<Order>,
    pub rivals: Vec<Rival>,
    /// The one SKU every order buys.
    pub units: inventory::Units,
    /// Deliveries not yet acknowledged, by consumer and message.
    pub network: BTreeMap<(Consumer, Msg), Pending>,
    pub inbox: BTreeSet<(Consumer, Msg)>,
    pub tasks: Vec<Task>,
    /// Crashes left, per participant.
    pub crashes: [u8; 3],
    pub outages: u8,
    pub lost_answers: u8,
}

impl State {
    /// Nothing in flight: every delivery acknowledged, no handler running.
    pub fn is_quiet(&self) -> bool {
        self.network.is_empty() && self.tasks.is_empty()
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (status, reason, wait) = self.status.to_columns();
        write!(f, "order {status}")?;
        if let Some(reason) = reason.or(wait) {
            write!(f, " ({reason})")?;
        }
        match self.reservation {
            Some(r) => write!(f, ", stock {}", r.as_str())?,
            None => write!(f, ", stock -")?,
        }
        match self.payment {
            Some(p) => write!(f, ", payment {p:?}")?,
            None => write!(f, ", payment -")?,
        }
        write!(f, ", provider {:?}", self.ledger)
    }
}
