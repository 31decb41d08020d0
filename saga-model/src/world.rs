//! What the model's states are made of: the participants' records of each
//! order, the messages and webhooks in flight, the handlers in progress,
//! the provider's ledger and refunds, and what is left of each fault's
//! budget.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use shop_proto::events::v1 as ev;
use shop_provider::domain as provider;
use shop_runtime::event::Event as _;
use svc_inventory::domain::{self as inventory, ReleaseReason};

use svc_order::domain as order;
use svc_payment::{domain as payment, refunds};

/// An order's index in the configuration.
pub type OrderNo = u8;

/// A refund's index among its order's refunds.
pub type RefundNo = u8;

/// The saga's events, as the platform publishes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    OrderPlaced,
    OrderConfirmed,
    OrderCancelled,
    /// `orders.refund_requested` of the order's refund with this number.
    OrderRefundRequested(RefundNo),
    InventoryReserved,
    InventoryRejected,
    InventoryCommitted,
    InventoryReleased(ReleaseReason),
    PaymentSucceeded,
    PaymentFailed,
    /// `payments.awaiting`: what the charge waits for.
    PaymentAwaiting(payment::Wait),
    /// `payments.refunded` of a cancelled order's charge (no refund id).
    PaymentRefunded,
    /// `payments.refunded` naming the order's refund with this number.
    RefundSucceeded(RefundNo),
    /// `payments.refund_failed` of the order's refund with this number.
    RefundFailed(RefundNo),
}

impl Event {
    /// Its subject without the key, from the platform's event declarations.
    pub fn subject(self) -> &'static str {
        match self {
            Self::OrderPlaced => ev::OrderPlaced::SUBJECT,
            Self::OrderConfirmed => ev::OrderConfirmed::SUBJECT,
            Self::OrderCancelled => ev::OrderCancelled::SUBJECT,
            Self::OrderRefundRequested(_) => ev::OrderRefundRequested::SUBJECT,
            Self::InventoryReserved => ev::InventoryReserved::SUBJECT,
            Self::InventoryRejected => ev::InventoryRejected::SUBJECT,
            Self::InventoryCommitted => ev::InventoryCommitted::SUBJECT,
            Self::InventoryReleased(_) => ev::InventoryReleased::SUBJECT,
            Self::PaymentSucceeded => ev::PaymentSucceeded::SUBJECT,
            Self::PaymentFailed => ev::PaymentFailed::SUBJECT,
            Self::PaymentAwaiting(_) => ev::PaymentAwaiting::SUBJECT,
            Self::PaymentRefunded | Self::RefundSucceeded(_) => ev::PaymentRefunded::SUBJECT,
            Self::RefundFailed(_) => ev::PaymentRefundFailed::SUBJECT,
        }
    }

    /// One event of each subject.
    pub const KINDS: [Self; 13] = [
        Self::OrderPlaced,
        Self::OrderConfirmed,
        Self::OrderCancelled,
        Self::OrderRefundRequested(0),
        Self::InventoryReserved,
        Self::InventoryRejected,
        Self::InventoryCommitted,
        Self::InventoryReleased(ReleaseReason::Expired),
        Self::PaymentSucceeded,
        Self::PaymentFailed,
        Self::PaymentAwaiting(payment::Wait::Processing),
        Self::PaymentRefunded,
        Self::RefundFailed(0),
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
    PaymentRefunds,
}

impl Consumer {
    pub const ALL: [Self; 7] = [
        Self::OrderInventory,
        Self::OrderPayments,
        Self::InventoryOrders,
        Self::InventoryPayments,
        Self::PaymentInventory,
        Self::PaymentOrders,
        Self::PaymentRefunds,
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
            Self::PaymentRefunds => svc_payment::refund_saga::REFUNDS_CONSUMER,
        }
    }

    pub fn participant(self) -> Participant {
        match self {
            Self::OrderInventory | Self::OrderPayments => Participant::Order,
            Self::InventoryOrders | Self::InventoryPayments => Participant::Inventory,
            Self::PaymentInventory | Self::PaymentOrders | Self::PaymentRefunds => Participant::Payment,
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

/// The card an order pays with: what the provider makes of a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Card {
    Ok,
    Declined,
    /// 3-D Secure: the charge waits for the customer, who authenticates it
    /// (captured), fails it (declined), or never acts.
    ThreeDs,
    /// Processing: the provider settles it later, captured or declined.
    Async,
}

impl Card {
    /// The emulator's test card that is charged so (`Async` settles either
    /// way here: the emulator's `pm_card_async` and `pm_card_async_declined`
    /// in one).
    pub fn provider(self) -> provider::Card {
        match self {
            Self::Ok => provider::Card::Ok,
            Self::Declined => provider::Card::Declined,
            Self::ThreeDs => provider::Card::ThreeDs,
            Self::Async => provider::Card::Async,
        }
    }
}

/// The payment intent under an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intent {
    /// Never called with this key.
    Untouched,
    /// Voided before any charge: none can be made under this key.
    Foreclosed,
    /// Made, and standing so; it moves only as the emulator's
    /// `domain::decide` says.
    Made(provider::Status),
}

/// The provider's ledger line of one idempotency key of a payment: its
/// intent, and the money given back of it. The model's unit of money is
/// the price of one unit of the SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ledger {
    /// What a capture takes: the order's total.
    pub amount: u8,
    pub intent: Intent,
    /// Given back or on its way back (pending refunds count, as the
    /// provider counts them), by refunds and voids alike.
    pub refunded: u8,
    /// A void of svc-payment's gave it back or cancelled it.
    pub voided: bool,
}

impl Ledger {
    /// A key for a charge of `amount`, not used yet.
    pub fn untouched(amount: u8) -> Self {
        Self {
            amount,
            intent: Intent::Untouched,
            refunded: 0,
            voided: false,
        }
    }

    /// Money captured under the key.
    pub fn captured(&self) -> u8 {
        match self.intent {
            Intent::Made(provider::Status::Succeeded) => self.amount,
            _ => 0,
        }
    }

    /// Money the provider holds under the key now.
    pub fn held(&self) -> u8 {
        self.captured().saturating_sub(self.refunded)
    }

    /// What svc-payment reads of the intent (`ProviderRecords::read`):
    /// `None` when there is none to read.
    pub fn standing(&self) -> Option<payment::Standing> {
        use provider::Status as S;
        let Intent::Made(status) = self.intent else {
            return None;
        };
        Some(match status {
            S::Succeeded if self.held() > 0 => payment::Standing::Captured,
            S::Succeeded | S::RequiresPaymentMethod | S::Canceled => payment::Standing::NothingHeld,
            S::Processing => payment::Standing::Awaiting(payment::Wait::Processing),
            S::RequiresAction => payment::Standing::Awaiting(payment::Wait::CustomerAction),
        })
    }
}

/// A refund at the provider, under one attempt's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AtProvider {
    Untouched,
    Pending,
    Succeeded,
    /// Refused, or failed later: nothing went back.
    Failed,
}

impl AtProvider {
    /// What svc-payment hears of it, answered or read.
    pub fn answer(self) -> refunds::Answer {
        match self {
            Self::Untouched => refunds::Answer::Unanswered,
            Self::Pending => refunds::Answer::Pending,
            Self::Succeeded => refunds::Answer::Succeeded,
            Self::Failed => refunds::Answer::Failed,
        }
    }
}

/// A refund an admin asked of a confirmed order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Refund {
    /// Units of the SKU it gives back, and so the money.
    pub amount: u8,
    /// svc-order's record of it.
    pub ordered: svc_order::refunds::RefundStatus,
    /// svc-payment's record of it.
    pub record: Option<refunds::Status>,
    /// What svc-payment announced of it: `payments.refunded` or
    /// `payments.refund_failed`.
    pub announced: Option<refunds::Publish>,
    /// The provider's refund under each attempt's key.
    pub attempts: Vec<AtProvider>,
}

impl Refund {
    pub fn new(amount: u8) -> Self {
        Self {
            amount,
            ordered: svc_order::refunds::RefundStatus::Pending,
            record: None,
            announced: None,
            attempts: Vec::new(),
        }
    }

    /// Money the provider gave back, or is giving back, for it.
    pub fn given_back(&self) -> u8 {
        let live = self
            .attempts
            .iter()
            .filter(|a| matches!(a, AtProvider::Pending | AtProvider::Succeeded))
            .count();
        self.amount.saturating_mul(u8::try_from(live).unwrap_or(u8::MAX))
    }
}

/// A webhook on its way about an order's charge. It names only the charge
/// (svc-payment reads the rest from the provider), so one is as good as
/// another, in whatever order they come: those in flight at once are one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Webhook {
    /// It came twice already (its 200 was lost).
    pub duplicated: bool,
}

/// Where one order stands with every participant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Order {
    pub card: Card,
    /// Its total: one unit of money per unit bought.
    pub total: u8,
    pub status: order::Status,
    /// The first terminal status it reached.
    pub settled: Option<order::Status>,
    pub reservation: Option<inventory::Status>,
    pub payment: Option<payment::Status>,
    /// The provider's ledger, one line per idempotency key the payment used.
    pub ledger: Vec<Ledger>,
    /// Charges that took money, ever.
    pub captures: u8,
    /// Past its reservation's deadline. (The order deadline may pass at any
    /// time: it is not ordered against the reservation's here, which only
    /// allows more behaviours.)
    pub expired: bool,
    pub cancel_asked: bool,
    /// Refunds asked of it once confirmed.
    pub refunds: Vec<Refund>,
    /// A webhook about its charge on its way to svc-payment.
    pub webhook: Option<Webhook>,
    /// svc-order parked word of a refund: settled the other way already,
    /// or of a refund it does not have.
    pub parked: bool,
}

impl Order {
    pub fn new(card: Card, total: u8) -> Self {
        Self {
            card,
            total,
            status: order::Status::Pending,
            settled: None,
            reservation: None,
            payment: None,
            ledger: Vec::new(),
            captures: 0,
            expired: false,
            cancel_asked: false,
            refunds: Vec::new(),
            webhook: None,
            parked: false,
        }
    }

    /// Money the provider holds for this order now.
    pub fn money_standing(&self) -> bool {
        self.ledger.iter().any(|l| l.held() > 0)
    }

    /// The provider changed something of this order's: it sends a webhook
    /// (one already on its way says as much).
    pub fn notify(&mut self) {
        self.webhook.get_or_insert(Webhook { duplicated: false });
    }
}

/// Where a handler that spans several steps stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Payment: committed a decision that names this call; not made yet.
    Calling(payment::Call),
    /// Payment: the provider answered, or was read; the next decision is
    /// not made yet.
    Answered(payment::Input),
    /// Refund: committed a decision that names this attempt; not asked yet.
    RefundCalling { refund: RefundNo, attempt: u32 },
    /// Refund: the provider answered, or was read.
    RefundAnswered { refund: RefundNo, input: refunds::Input },
    /// Inventory without the reservation lock (a mutation): read the
    /// reservation as this, not yet written.
    Read(Option<inventory::Status>),
}

/// What a handler in progress handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// A delivery, unacknowledged meanwhile.
    Delivery(Consumer, Msg),
    /// The expiry sweeper's find.
    Expiry,
    /// A webhook: svc-payment read the charge it names from the provider.
    Webhook,
    /// Reconciliation: svc-payment read a charge from the provider.
    Reconciliation,
}

/// A handler in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Task {
    pub origin: Origin,
    pub order: OrderNo,
    pub stage: Stage,
}

impl Task {
    pub fn participant(&self) -> Participant {
        match self.stage {
            Stage::Calling(_) | Stage::Answered(_) | Stage::RefundCalling { .. } | Stage::RefundAnswered { .. } => {
                Participant::Payment
            }
            Stage::Read(_) => Participant::Inventory,
        }
    }

    /// The delivery it handles, if any.
    pub fn delivery(&self) -> Option<(Consumer, Msg)> {
        match self.origin {
            Origin::Delivery(consumer, msg) => Some((consumer, msg)),
            Origin::Expiry | Origin::Webhook | Origin::Reconciliation => None,
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
    /// Whether each delivery, and each webhook, may come twice.
    pub duplicates: bool,
    /// Whether the provider sends webhooks.
    pub webhooks: bool,
    /// Crashes left, per participant.
    pub crashes: [u8; 3],
    pub outages: u8,
    pub lost_answers: u8,
    /// Pending refunds the provider may still fail.
    pub refund_failures: u8,
}

impl State {
    /// Nothing in flight: every delivery acknowledged, no handler running,
    /// no webhook on its way.
    pub fn nothing_in_flight(&self) -> bool {
        self.network.is_empty() && self.tasks.is_empty() && self.orders.iter().all(|o| o.webhook.is_none())
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
        write!(f, ", provider [")?;
        for (i, line) in self.ledger.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            match line.intent {
                Intent::Untouched => write!(f, "{sep}untouched")?,
                Intent::Foreclosed => write!(f, "{sep}voided before any charge")?,
                Intent::Made(status) => write!(f, "{sep}{status:?}")?,
            }
            if line.refunded > 0 {
                write!(f, " refunded {}/{}", line.refunded, line.amount)?;
            }
        }
        write!(f, "]")?;
        for (r, refund) in self.refunds.iter().enumerate() {
            write!(
                f,
                ", refund {r} of {}/{}: order's {:?}, payment's {:?}, announced {:?}, provider {:?}",
                refund.amount, self.total, refund.ordered, refund.record, refund.announced, refund.attempts
            )?;
        }
        if self.parked {
            write!(f, ", a refund's word parked")?;
        }
        if let Some(webhook) = self.webhook {
            let twice = if webhook.duplicated { " (came twice)" } else { "" };
            write!(f, ", a webhook on its way{twice}")?;
        }
        Ok(())
    }
}
