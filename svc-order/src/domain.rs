//! The order's domain: validated commands and the state machine.
//!
//! ```text
//! PENDING ──reserved──▶ RESERVED ──committed──▶ CONFIRMED ──all of it back──▶ REFUNDED
//!    │                     │  ▲                       │                             ▲
//!    │      payment awaiting │  │                     │ part back                   │ the rest back
//!    │                     ▼  │                       ▼                             │
//!    └──────── CANCELLED ◀─┘                     PARTIALLY_REFUNDED ────────────────┘
//!     (out of stock, payment declined,              ⟲ another part back
//!      reservation expired, customer cancelled,
//!      timed out, payment not authenticated)       (payment awaiting: processing,
//!                                                   or the customer's action)
//! ```
//! A RESERVED order also knows what its payment waits for
//! ([`PaymentWait`]); an order whose payment waits for the customer and
//! runs out of time (its reservation expired, its deadline passed) is
//! cancelled `PaymentNotAuthenticated`. CONFIRMED and CANCELLED end the
//! checkout ([`Status::is_terminal`]): the saga's triggers never move them.
//! Only a refund that succeeded moves a confirmed order on, to
//! PARTIALLY_REFUNDED or, once its succeeded refunds add up to its total,
//! REFUNDED (what may be refunded is [`crate::refunds`]'s to say). Every
//! event and API call goes through [`decide`]; nothing else changes a
//! status.

use std::{collections::BTreeSet, fmt, str::FromStr};

use shop_runtime::values::{IdempotencyKey, Money, Quantity, Sku};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelReason {
    OutOfStock,
    PaymentDeclined,
    ReservationExpired,
    CustomerCancelled,
    /// Not settled within the order deadline.
    TimedOut,
    /// The customer did not authenticate the payment before the reservation
    /// expired or the order deadline passed.
    PaymentNotAuthenticated,
}

impl CancelReason {
    pub const ALL: [Self; 6] = [
        Self::OutOfStock,
        Self::PaymentDeclined,
        Self::ReservationExpired,
        Self::CustomerCancelled,
        Self::TimedOut,
        Self::PaymentNotAuthenticated,
    ];

    /// As stored in `orders.cancel_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfStock => "out_of_stock",
            Self::PaymentDeclined => "payment_declined",
            Self::ReservationExpired => "reservation_expired",
            Self::CustomerCancelled => "customer_cancelled",
            Self::TimedOut => "timed_out",
            Self::PaymentNotAuthenticated => "payment_not_authenticated",
        }
    }
}

/// What the payment of a RESERVED order waits for, once svc-payment has
/// said (`payments.awaiting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentWait {
    /// The provider settles the charge later by itself.
    Processing,
    /// The customer must authenticate the charge (3-D Secure) at the
    /// order's `next_action_url`.
    CustomerAction,
}

impl PaymentWait {
    pub const ALL: [Self; 2] = [Self::Processing, Self::CustomerAction];

    /// As stored in `orders.payment_wait`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "processing",
            Self::CustomerAction => "customer_action",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Pending,
    /// The stock is held; `None` until svc-payment says what the charge
    /// waits for, if it waits at all.
    Reserved(Option<PaymentWait>),
    Confirmed,
    /// Confirmed, and part of its total given back by refunds that succeeded.
    PartiallyRefunded,
    /// Confirmed, and all of its total given back by refunds that succeeded.
    Refunded,
    Cancelled(CancelReason),
}

impl Status {
    /// The checkout is over: the order was confirmed (refunded since, or
    /// not) or cancelled. The saga's triggers never move it; a confirmed
    /// order moves on only by its refunds.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Confirmed | Self::PartiallyRefunded | Self::Refunded | Self::Cancelled(_)
        )
    }

    /// The status as the contract names it, without its prefix
    /// (`ORDER_STATUS_CONFIRMED` is `CONFIRMED`), for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Reserved(_) => "RESERVED",
            Self::Confirmed => "CONFIRMED",
            Self::PartiallyRefunded => "PARTIALLY_REFUNDED",
            Self::Refunded => "REFUNDED",
            Self::Cancelled(_) => "CANCELLED",
        }
    }

    /// `(status, cancel_reason, payment_wait)` as stored.
    pub fn to_columns(self) -> (&'static str, Option<&'static str>, Option<&'static str>) {
        match self {
            Self::Pending => ("pending", None, None),
            Self::Reserved(wait) => ("reserved", None, wait.map(PaymentWait::as_str)),
            Self::Confirmed => ("confirmed", None, None),
            Self::PartiallyRefunded => ("partially_refunded", None, None),
            Self::Refunded => ("refunded", None, None),
            Self::Cancelled(reason) => ("cancelled", Some(reason.as_str()), None),
        }
    }

    pub fn from_columns(status: &str, reason: Option<&str>, wait: Option<&str>) -> Option<Self> {
        Some(match (status, reason, wait) {
            ("pending", None, None) => Self::Pending,
            ("reserved", None, None) => Self::Reserved(None),
            ("reserved", None, Some(w)) => {
                Self::Reserved(Some(PaymentWait::ALL.into_iter().find(|p| p.as_str() == w)?))
            }
            ("confirmed", None, None) => Self::Confirmed,
            ("partially_refunded", None, None) => Self::PartiallyRefunded,
            ("refunded", None, None) => Self::Refunded,
            ("cancelled", Some(r), None) => Self::Cancelled(CancelReason::ALL.into_iter().find(|c| c.as_str() == r)?),
            _ => return None,
        })
    }
}

/// What happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    StockReserved,
    StockRejected,
    StockCommitted,
    PaymentDeclined,
    ReservationExpired,
    CustomerCancel,
    /// The order deadline passed before it settled.
    Overdue,
    /// svc-payment's charge waits (`payments.awaiting`).
    PaymentAwaiting(PaymentWait),
    /// A refund of the order succeeded (`payments.refunded` naming it);
    /// `fully`: the order's succeeded refunds now add up to its total.
    RefundSucceeded {
        fully: bool,
    },
    /// A refund of the order failed (`payments.refund_failed`): nothing
    /// was given back.
    RefundFailed,
}

/// An event svc-order hears about one of its orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Heard {
    InventoryReserved,
    InventoryRejected,
    InventoryCommitted,
    /// `inventory.released`; `expired`: released because its deadline passed.
    InventoryReleased {
        expired: bool,
    },
    PaymentFailed,
    /// `payments.awaiting`; `action`: the customer must authenticate
    /// (a `next_action_url` came with it), otherwise the charge is processing.
    PaymentAwaiting {
        action: bool,
    },
}

impl Heard {
    /// The trigger this event is for the order, if any. The order confirms
    /// on `inventory.committed`, never on `payments.succeeded`: only the
    /// commit proves that the stock was still held when the money came.
    pub fn trigger(self) -> Option<Trigger> {
        Some(match self {
            Self::InventoryReserved => Trigger::StockReserved,
            Self::InventoryRejected => Trigger::StockRejected,
            Self::InventoryCommitted => Trigger::StockCommitted,
            Self::InventoryReleased { expired: true } => Trigger::ReservationExpired,
            // Releases after a payment failure or cancellation follow an
            // order that is already cancelled.
            Self::InventoryReleased { expired: false } => return None,
            Self::PaymentFailed => Trigger::PaymentDeclined,
            Self::PaymentAwaiting { action: true } => Trigger::PaymentAwaiting(PaymentWait::CustomerAction),
            Self::PaymentAwaiting { action: false } => Trigger::PaymentAwaiting(PaymentWait::Processing),
        })
    }
}

/// What the state machine says about a trigger in a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Move(Status),
    /// Stale or repeated: nothing to do (events after a terminal status).
    Ignore,
    /// Not allowed; the message says why.
    Refuse(&'static str),
}

pub fn decide(from: Status, trigger: Trigger) -> Decision {
    use CancelReason as R;
    use Decision::{Ignore, Move, Refuse};
    use PaymentWait::{CustomerAction, Processing};
    use Status::{Cancelled, Confirmed, PartiallyRefunded, Pending, Refunded, Reserved};
    use Trigger as T;
    match (from, trigger) {
        (Pending, T::StockReserved) => Move(Reserved(None)),
        (Pending, T::StockRejected) => Move(Cancelled(R::OutOfStock)),
        // A commit implies the reservation whose event it overtook.
        (Pending | Reserved(_), T::StockCommitted) => Move(Confirmed),
        (Pending | Reserved(_), T::PaymentDeclined) => Move(Cancelled(R::PaymentDeclined)),
        // Time ran out while the customer was to authenticate the payment.
        (Reserved(Some(CustomerAction)), T::ReservationExpired | T::Overdue) => {
            Move(Cancelled(R::PaymentNotAuthenticated))
        }
        (Pending | Reserved(None | Some(Processing)), T::ReservationExpired) => Move(Cancelled(R::ReservationExpired)),
        (Pending | Reserved(None | Some(Processing)), T::Overdue) => Move(Cancelled(R::TimedOut)),
        (Pending | Reserved(_), T::CustomerCancel) => Move(Cancelled(R::CustomerCancelled)),
        // svc-payment charges only a reservation: a wait implies the
        // reservation whose event it overtook.
        (Pending | Reserved(None), T::PaymentAwaiting(wait)) => Move(Reserved(Some(wait))),
        // Authenticated; the provider settles it now.
        (Reserved(Some(CustomerAction)), T::PaymentAwaiting(Processing)) => Move(Reserved(Some(Processing))),
        // Repeated, or overtaken: a processing charge never needs the
        // customer again.
        (Reserved(Some(_)), T::PaymentAwaiting(_)) => Ignore,
        (Reserved(_), T::StockReserved) => Ignore,
        // Inventory never rejects after it reserved; a stray event changes nothing.
        (Reserved(_), T::StockRejected) => Ignore,
        // Money given back moves a confirmed order on, and nothing else
        // does. Another part back keeps it PARTIALLY_REFUNDED, as a move:
        // the order changed.
        (Confirmed | PartiallyRefunded, T::RefundSucceeded { fully: false }) => Move(PartiallyRefunded),
        (Confirmed | PartiallyRefunded, T::RefundSucceeded { fully: true }) => Move(Refunded),
        // All of it is back: no refund is left to succeed.
        (Refunded, T::RefundSucceeded { .. }) => Ignore,
        // Nothing came back; the status says what succeeded refunds gave.
        (Confirmed | PartiallyRefunded | Refunded, T::RefundFailed) => Ignore,
        // Only a confirmed order is ever refunded.
        (Pending | Reserved(_) | Cancelled(_), T::RefundSucceeded { .. } | T::RefundFailed) => {
            Refuse("only a confirmed order has refunds")
        }
        (Confirmed | PartiallyRefunded | Refunded, T::CustomerCancel) => {
            Refuse("the order is already confirmed and can no longer be cancelled")
        }
        (Cancelled(_), T::CustomerCancel) => Ignore,
        (Confirmed | PartiallyRefunded | Refunded | Cancelled(_), _) => Ignore,
    }
}

/// Where the customer authenticates a payment: an `https://` (or, for a
/// provider on the same machine, `http://`) URL of at most 2048 bytes,
/// without spaces or control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextActionUrl(String);

impl NextActionUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NextActionUrl {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        let rest = raw.strip_prefix("https://").or_else(|| raw.strip_prefix("http://"));
        if !rest.is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/')) {
            return Err(format!("{raw:?} is not an http(s) URL"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(format!("a URL of {} bytes is longer than {}", raw.len(), Self::MAX_LEN));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{raw:?} has spaces or control characters"));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// A payment method token, e.g. `pm_card_ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethod(String);

impl PaymentMethod {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PaymentMethod {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        let body_ok = raw.strip_prefix("pm_").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
        if raw.len() > 64 || !body_ok {
            return Err(format!("{raw:?} is not a payment method token (e.g. \"pm_card_ok\")"));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl fmt::Display for PaymentMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Largest number of lines in one order.
pub const MAX_LINES: usize = 100;

/// A line as the customer asked for it (prices come from the catalog).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedLine {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// A validated `PlaceOrder` request.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    pub key: IdempotencyKey,
    pub lines: Vec<RequestedLine>,
    pub payment_method: PaymentMethod,
}

impl PlaceOrder {
    /// Canonical text of the request: the same key may only come back with
    /// the same fingerprint.
    pub fn fingerprint(&self) -> String {
        let mut lines: Vec<String> = self
            .lines
            .iter()
            .map(|l| format!("{}x{}", l.sku, l.quantity.get()))
            .collect();
        lines.sort();
        format!("v1|{}|{}", self.payment_method, lines.join(","))
    }

    /// Whether an order placed earlier under this key came from the same
    /// request: only then is a retry answered with that order.
    pub fn is_retry_of(&self, fingerprint: &str) -> bool {
        self.fingerprint() == fingerprint
    }

    /// Prices every line from the catalog's answer and totals the order.
    pub fn price(&self, catalog: &[CatalogPrice]) -> Result<PricedOrder, PricingError> {
        let lines = self
            .lines
            .iter()
            .enumerate()
            .map(|(line, requested)| {
                let product =
                    catalog
                        .iter()
                        .find(|p| p.sku == requested.sku)
                        .ok_or_else(|| PricingError::UnknownSku {
                            line,
                            sku: requested.sku.clone(),
                        })?;
                let unit_price = product.unit_price.ok_or_else(|| PricingError::NoPrice {
                    sku: requested.sku.clone(),
                })?;
                Ok(PricedLine {
                    sku: requested.sku.clone(),
                    quantity: requested.quantity,
                    unit_price,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let total = total_of(&lines).ok_or(PricingError::CannotTotal)?;
        Ok(PricedOrder { lines, total })
    }
}

/// What the catalog says a SKU costs (`None`: listed without a valid price).
#[derive(Debug, Clone)]
pub struct CatalogPrice {
    pub sku: Sku,
    pub unit_price: Option<Money>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: Money,
}

/// An order's lines at the catalog's prices, and their total.
#[derive(Debug, Clone)]
pub struct PricedOrder {
    pub lines: Vec<PricedLine>,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("no product {sku} in the catalog")]
    UnknownSku { line: usize, sku: Sku },
    #[error("product {sku} has no valid price")]
    NoPrice { sku: Sku },
    #[error("the lines cannot be totalled (mixed currencies or amount too large)")]
    CannotTotal,
}

/// The total of `lines`, or `None` on overflow or mixed currencies.
fn total_of(lines: &[PricedLine]) -> Option<Money> {
    let (first, rest) = lines.split_first()?;
    rest.iter().try_fold(first.unit_price.times(first.quantity)?, |sum, l| {
        sum.plus(l.unit_price.times(l.quantity)?)
    })
}

/// A field that failed validation, with the path a client can act on
/// (e.g. `lines[1].quantity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

/// Validates the raw request parts; the first problem is reported.
pub fn validate_place_order(
    key: &str,
    lines: &[(String, i32)],
    payment_method: &str,
    accepted_methods: &[PaymentMethod],
) -> Result<PlaceOrder, FieldError> {
    let err = |field: String, reason: String| FieldError { field, reason };
    let key = IdempotencyKey::parse(key).map_err(|r| err("idempotency_key".into(), r))?;
    if lines.is_empty() {
        return Err(err("lines".into(), "must contain at least one line".into()));
    }
    let valid = requested_lines(lines)?;
    if payment_method.is_empty() {
        return Err(err("payment_method".into(), "is required (e.g. \"pm_card_ok\")".into()));
    }
    let method: PaymentMethod = payment_method.parse().map_err(|r| err("payment_method".into(), r))?;
    if !accepted_methods.contains(&method) {
        let known: Vec<&str> = accepted_methods.iter().map(PaymentMethod::as_str).collect();
        return Err(err(
            "payment_method".into(),
            format!("{method} is not accepted; use one of {}", known.join(", ")),
        ));
    }
    Ok(PlaceOrder {
        key,
        lines: valid,
        payment_method: method,
    })
}

/// Validates the `(sku, quantity)` lines of a request: at most
/// [`MAX_LINES`], each SKU valid and named once, each quantity in range;
/// the first problem is reported.
pub(crate) fn requested_lines(lines: &[(String, i32)]) -> Result<Vec<RequestedLine>, FieldError> {
    let err = |field: String, reason: String| FieldError { field, reason };
    if lines.len() > MAX_LINES {
        return Err(err(
            "lines".into(),
            format!("at most {MAX_LINES} lines per order, got {}", lines.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut valid = Vec::with_capacity(lines.len());
    for (i, (sku, quantity)) in lines.iter().enumerate() {
        let sku = Sku::parse(sku).map_err(|r| err(format!("lines[{i}].sku"), r))?;
        let quantity = Quantity::new(*quantity).map_err(|r| err(format!("lines[{i}].quantity"), r))?;
        if !seen.insert(sku.clone()) {
            return Err(err(
                format!("lines[{i}].sku"),
                format!("{sku} appears twice; put the total quantity on one line"),
            ));
        }
        valid.push(RequestedLine { sku, quantity });
    }
    Ok(valid)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const ALL_STATUSES: [Status; 13] = [
        Status::Pending,
        Status::Reserved(None),
        Status::Reserved(Some(PaymentWait::Processing)),
        Status::Reserved(Some(PaymentWait::CustomerAction)),
        Status::Confirmed,
        Status::PartiallyRefunded,
        Status::Refunded,
        Status::Cancelled(CancelReason::OutOfStock),
        Status::Cancelled(CancelReason::PaymentDeclined),
        Status::Cancelled(CancelReason::ReservationExpired),
        Status::Cancelled(CancelReason::CustomerCancelled),
        Status::Cancelled(CancelReason::TimedOut),
        Status::Cancelled(CancelReason::PaymentNotAuthenticated),
    ];
    /// The checkout saga's triggers (events and API calls of an order
    /// being placed).
    const SAGA_TRIGGERS: [Trigger; 9] = [
        Trigger::StockReserved,
        Trigger::StockRejected,
        Trigger::StockCommitted,
        Trigger::PaymentDeclined,
        Trigger::ReservationExpired,
        Trigger::CustomerCancel,
        Trigger::Overdue,
        Trigger::PaymentAwaiting(PaymentWait::Processing),
        Trigger::PaymentAwaiting(PaymentWait::CustomerAction),
    ];
    /// What a refund of a confirmed order tells it.
    const REFUND_TRIGGERS: [Trigger; 3] = [
        Trigger::RefundSucceeded { fully: false },
        Trigger::RefundSucceeded { fully: true },
        Trigger::RefundFailed,
    ];

    #[test]
    fn terminal_statuses_never_move_on_the_sagas_triggers() {
        for from in ALL_STATUSES.into_iter().filter(|s| s.is_terminal()) {
            for trigger in SAGA_TRIGGERS {
                assert!(
                    !matches!(decide(from, trigger), Decision::Move(_)),
                    "{from:?} moved on {trigger:?}"
                );
            }
        }
    }

    /// Every refund trigger in every status, with what it does: only money
    /// given back moves an order, only a confirmed one, and never back.
    #[test]
    fn every_refund_trigger_in_every_status() {
        use Decision::{Ignore, Move, Refuse};
        use Status::{Confirmed, PartiallyRefunded, Refunded};
        let never = Refuse("only a confirmed order has refunds");
        for from in ALL_STATUSES {
            let expected = match from {
                Confirmed | PartiallyRefunded => [Move(PartiallyRefunded), Move(Refunded), Ignore],
                Refunded => [Ignore, Ignore, Ignore],
                Status::Pending | Status::Reserved(_) | Status::Cancelled(_) => [never, never, never],
            };
            for (trigger, expected) in REFUND_TRIGGERS.into_iter().zip(expected) {
                assert_eq!(decide(from, trigger), expected, "{from:?} on {trigger:?}");
            }
        }
        // A confirmed order, refunded or not, cannot be cancelled.
        for from in [Confirmed, PartiallyRefunded, Refunded] {
            assert!(matches!(decide(from, Trigger::CustomerCancel), Refuse(_)), "{from:?}");
        }
    }

    #[test]
    fn only_refunds_move_a_confirmed_order_and_the_status_follows_what_came_back() {
        let mut status = Status::Confirmed;
        for (trigger, then) in [
            (Trigger::RefundFailed, Status::Confirmed),
            (Trigger::RefundSucceeded { fully: false }, Status::PartiallyRefunded),
            (Trigger::RefundFailed, Status::PartiallyRefunded),
            (Trigger::RefundSucceeded { fully: false }, Status::PartiallyRefunded),
            (Trigger::RefundSucceeded { fully: true }, Status::Refunded),
        ] {
            if let Decision::Move(to) = decide(status, trigger) {
                status = to;
            }
            assert_eq!(status, then, "after {trigger:?}");
        }
        // One refund of everything goes straight to REFUNDED.
        assert_eq!(
            decide(Status::Confirmed, Trigger::RefundSucceeded { fully: true }),
            Decision::Move(Status::Refunded)
        );
    }

    #[test]
    fn happy_path_and_cancellations() {
        assert_eq!(
            decide(Status::Pending, Trigger::StockReserved),
            Decision::Move(Status::Reserved(None))
        );
        assert_eq!(
            decide(Status::Reserved(None), Trigger::StockCommitted),
            Decision::Move(Status::Confirmed)
        );
        assert_eq!(
            decide(Status::Pending, Trigger::StockRejected),
            Decision::Move(Status::Cancelled(CancelReason::OutOfStock))
        );
        assert_eq!(
            decide(Status::Reserved(None), Trigger::ReservationExpired),
            Decision::Move(Status::Cancelled(CancelReason::ReservationExpired))
        );
        // Inventory commits only what it reserved: a commit that overtakes
        // its reservation's event still confirms, instead of waiting on it.
        assert_eq!(
            decide(Status::Pending, Trigger::StockCommitted),
            Decision::Move(Status::Confirmed)
        );
        assert!(matches!(
            decide(Status::Confirmed, Trigger::CustomerCancel),
            Decision::Refuse(_)
        ));
        for unsettled in [Status::Pending, Status::Reserved(None)] {
            assert_eq!(
                decide(unsettled, Trigger::Overdue),
                Decision::Move(Status::Cancelled(CancelReason::TimedOut))
            );
        }
    }

    /// Every trigger in every status that is not terminal, with what it does.
    #[test]
    fn every_trigger_in_every_unsettled_status() {
        use CancelReason as R;
        use Decision::{Ignore, Move};
        use PaymentWait::{CustomerAction as Action, Processing};
        use Status::{Cancelled, Confirmed, Pending, Reserved};
        use Trigger as T;
        let cancelled = |reason| Move(Cancelled(reason));
        let awaiting = |wait| Move(Reserved(Some(wait)));
        #[rustfmt::skip]
        let table = [
            (Pending, [
                Move(Reserved(None)), cancelled(R::OutOfStock), Move(Confirmed), cancelled(R::PaymentDeclined),
                cancelled(R::ReservationExpired), cancelled(R::CustomerCancelled), cancelled(R::TimedOut),
                awaiting(Processing), awaiting(Action),
            ]),
            (Reserved(None), [
                Ignore, Ignore, Move(Confirmed), cancelled(R::PaymentDeclined),
                cancelled(R::ReservationExpired), cancelled(R::CustomerCancelled), cancelled(R::TimedOut),
                awaiting(Processing), awaiting(Action),
            ]),
            (Reserved(Some(Processing)), [
                Ignore, Ignore, Move(Confirmed), cancelled(R::PaymentDeclined),
                cancelled(R::ReservationExpired), cancelled(R::CustomerCancelled), cancelled(R::TimedOut),
                Ignore, Ignore,
            ]),
            (Reserved(Some(Action)), [
                Ignore, Ignore, Move(Confirmed), cancelled(R::PaymentDeclined),
                cancelled(R::PaymentNotAuthenticated), cancelled(R::CustomerCancelled),
                cancelled(R::PaymentNotAuthenticated),
                awaiting(Processing), Ignore,
            ]),
        ];
        for from in ALL_STATUSES.into_iter().filter(|s| !s.is_terminal()) {
            assert!(
                table.iter().any(|(s, _)| *s == from),
                "{from:?} is missing from the table"
            );
        }
        for (from, decisions) in table {
            for (trigger, expected) in SAGA_TRIGGERS.into_iter().zip(decisions) {
                assert_eq!(decide(from, trigger), expected, "{from:?} on {trigger:?}");
            }
        }
        // Only svc-payment's word that a charge waits reaches these triggers.
        assert_eq!(
            Heard::PaymentAwaiting { action: true }.trigger(),
            Some(T::PaymentAwaiting(Action))
        );
        assert_eq!(
            Heard::PaymentAwaiting { action: false }.trigger(),
            Some(T::PaymentAwaiting(Processing))
        );
    }

    #[test]
    fn next_action_urls_are_http_urls_without_spaces() {
        for good in [
            "https://provider.example/3ds/pi_1?return=x",
            "http://127.0.0.1:4242/v1/payment_intents/pi_1/authenticate",
        ] {
            assert_eq!(
                good.parse::<NextActionUrl>().map(|u| u.as_str().to_owned()),
                Ok(good.to_owned())
            );
        }
        let long = format!("https://x.example/{}", "a".repeat(NextActionUrl::MAX_LEN));
        for bad in [
            "",
            "https://",
            "https:///path",
            "javascript:alert(1)",
            "ftp://x.example/",
            "https://x.example/a b",
            "https://x.example/\n",
            long.as_str(),
        ] {
            assert!(bad.parse::<NextActionUrl>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn statuses_round_trip_through_columns() {
        for s in ALL_STATUSES {
            let (status, reason, wait) = s.to_columns();
            assert_eq!(Status::from_columns(status, reason, wait), Some(s));
        }
        assert_eq!(Status::from_columns("cancelled", None, None), None);
        assert_eq!(Status::from_columns("refunded", Some("timed_out"), None), None);
        assert_eq!(
            Status::from_columns("partially_refunded", None, Some("processing")),
            None
        );
        assert_eq!(Status::from_columns("pending", None, Some("processing")), None);
        assert_eq!(Status::from_columns("reserved", None, Some("napping")), None);
        assert_eq!(
            Status::from_columns("cancelled", Some("timed_out"), Some("customer_action")),
            None
        );
    }

    fn methods() -> Vec<PaymentMethod> {
        ["pm_card_ok", "pm_card_declined"]
            .iter()
            .map(|m| m.parse().expect("valid"))
            .collect()
    }

    #[test]
    fn validation_names_the_field() {
        let line = |s: &str, q| (s.to_owned(), q);
        let case = |key, lines: &[(String, i32)], pm| {
            validate_place_order(key, lines, pm, &methods())
                .map(|_| ())
                .map_err(|e| e.field)
        };
        assert_eq!(
            case("", &[line("SKU-A", 1)], "pm_card_ok"),
            Err("idempotency_key".into())
        );
        assert_eq!(case("k", &[], "pm_card_ok"), Err("lines".into()));
        assert_eq!(
            case("k", &[line("SKU-A", 1), line("SKU-B", 0)], "pm_card_ok"),
            Err("lines[1].quantity".into())
        );
        assert_eq!(
            case("k", &[line("bad sku", 1)], "pm_card_ok"),
            Err("lines[0].sku".into())
        );
        assert_eq!(
            case("k", &[line("SKU-A", 1), line("SKU-A", 1)], "pm_card_ok"),
            Err("lines[1].sku".into())
        );
        assert_eq!(
            case("k", &[line("SKU-A", 1)], "pm_bitcoin"),
            Err("payment_method".into())
        );
        assert_eq!(case("k", &[line("SKU-A", 1)], ""), Err("payment_method".into()));
        assert_eq!(case("k", &[line("SKU-A", 1)], "pm_card_ok"), Ok(()));
    }

    #[test]
    fn fingerprint_ignores_line_order() {
        let a = validate_place_order(
            "k",
            &[("SKU-A".into(), 1), ("SKU-B".into(), 2)],
            "pm_card_ok",
            &methods(),
        );
        let b = validate_place_order(
            "k",
            &[("SKU-B".into(), 2), ("SKU-A".into(), 1)],
            "pm_card_ok",
            &methods(),
        );
        let c = validate_place_order(
            "k",
            &[("SKU-B".into(), 3), ("SKU-A".into(), 1)],
            "pm_card_ok",
            &methods(),
        );
        let fp = |r: Result<PlaceOrder, FieldError>| r.expect("valid").fingerprint();
        assert_eq!(fp(a.clone()), fp(b));
        assert_ne!(fp(a), fp(c));
    }

    #[test]
    fn pricing_takes_the_catalogs_prices_and_names_what_it_cannot_price() {
        let eur = shop_runtime::values::Currency::parse("EUR").expect("valid");
        let usd = shop_runtime::values::Currency::parse("USD").expect("valid");
        let price = |sku: &str, unit_price| CatalogPrice {
            sku: Sku::parse(sku).expect("valid SKU"),
            unit_price,
        };
        let order = validate_place_order(
            "k",
            &[("SKU-A".into(), 2), ("SKU-B".into(), 1)],
            "pm_card_ok",
            &methods(),
        )
        .expect("valid");

        let priced = order
            .price(&[
                price("SKU-B", Some(Money::new(eur, 100))),
                price("SKU-A", Some(Money::new(eur, 250))),
            ])
            .expect("priced");
        assert_eq!(priced.total, Money::new(eur, 600));
        assert_eq!(
            priced.lines[0].unit_price,
            Money::new(eur, 250),
            "in the request's order"
        );

        let unknown = order.price(&[price("SKU-A", Some(Money::new(eur, 250)))]);
        assert!(
            matches!(unknown, Err(PricingError::UnknownSku { line: 1, .. })),
            "{unknown:?}"
        );
        let unpriced = order.price(&[price("SKU-A", None), price("SKU-B", Some(Money::new(eur, 1)))]);
        assert!(matches!(unpriced, Err(PricingError::NoPrice { .. })), "{unpriced:?}");
        let mixed = order.price(&[
            price("SKU-A", Some(Money::new(eur, 1))),
            price("SKU-B", Some(Money::new(usd, 1))),
        ]);
        assert_eq!(mixed.map(|p| p.total), Err(PricingError::CannotTotal));
        assert!(order.is_retry_of(&order.fingerprint()));
    }
}
