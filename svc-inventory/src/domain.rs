//! An order's reservation and the units it holds, as a state machine.
//!
//! ```text
//!          placed, every line available            payment succeeded
//!  (none) ───────────────────────────────▶ HELD ───────────────────▶ COMMITTED
//!    │ │   placed, a line short              │                           │
//!    │ └───────────────────────▶ REJECTED    │ payment failed, expired,  │ order
//!    │     order cancelled                   │ order cancelled           │ cancelled
//!    └─────────────────────────▶ RELEASED ◀──┴───────────────────────────┘
//! ```
//!
//! Every trigger goes through [`decide`]; the store applies the decision
//! under the reservation's row lock, and the units move only as
//! [`Movement`] says. A refund of a committed order may take part of its
//! units back on hand ([`take_back`]) without moving the reservation. The saga model (`saga-model`) checks these same
//! functions over every interleaving.

use shop_runtime::values::{Quantity, Sku};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Units held for the order until it is paid, failed, cancelled or expired.
    Held,
    /// A line was short when the order was placed; nothing was held.
    Rejected,
    /// Paid: the held units are sold.
    Committed,
    /// Given back (or a tombstone: cancelled before it was placed).
    Released,
}

impl Status {
    /// As stored in `reservations.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Rejected => "rejected",
            Self::Committed => "committed",
            Self::Released => "released",
        }
    }

    pub fn from_column(raw: &str) -> Option<Self> {
        [Self::Held, Self::Rejected, Self::Committed, Self::Released]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReleaseReason {
    Expired,
    PaymentFailed,
    OrderCancelled,
}

impl ReleaseReason {
    /// As stored in `reservations.release_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::PaymentFailed => "payment_failed",
            Self::OrderCancelled => "order_cancelled",
        }
    }
}

/// What happened to an order, as far as its stock is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// `orders.placed`.
    Placed,
    /// `payments.succeeded`.
    PaymentSucceeded,
    /// `payments.failed`, `orders.cancelled`, or the reservation's deadline.
    Release(ReleaseReason),
}

/// How an order's units move, per unit of each line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Movement {
    /// Held for the order: reserved, still on hand.
    Hold,
    /// Sold: leaves both on hand and reserved.
    Sell,
    /// No longer held.
    Unhold,
    /// Sold, then given back (by a cancellation, or a refund that
    /// restocks): on hand again.
    Return,
}

impl Movement {
    /// The change to `(on_hand, reserved)` per unit.
    pub fn per_unit(self) -> (i64, i64) {
        match self {
            Self::Hold => (0, 1),
            Self::Sell => (-1, -1),
            Self::Unhold => (0, -1),
            Self::Return => (1, 0),
        }
    }

    /// What a reservation's units do when it moves from `from` to `to`.
    fn of(from: Status, to: Status) -> Option<Self> {
        match (from, to) {
            (Status::Held, Status::Committed) => Some(Self::Sell),
            (Status::Held, Status::Released) => Some(Self::Unhold),
            (Status::Committed, Status::Released) => Some(Self::Return),
            _ => None,
        }
    }
}

/// What [`decide`] says about a trigger for a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A placement never seen before: hold every line if each is available
    /// ([`hold`]), else reject the order.
    Reserve,
    /// The reservation moves, and its units with it; announced as
    /// `inventory.committed` or `inventory.released`.
    Move { to: Status, units: Option<Movement> },
    /// Cancelled before it was placed: a released tombstone, so that a late
    /// `orders.placed` reserves nothing. Not announced.
    Tombstone,
    /// Repeated or stale: nothing to do.
    Ignore,
    /// The reservation this acts on is not made yet: try again later.
    NotYet,
}

/// The state machine: what `trigger` does to the reservation `current`
/// (`None`: no reservation for the order).
pub fn decide(current: Option<Status>, trigger: Trigger) -> Decision {
    use Decision::{Ignore, NotYet, Reserve, Tombstone};
    use ReleaseReason as R;
    use Status::{Committed, Held, Released};
    let settle = |from: Status, to: Status| Decision::Move {
        to,
        units: Movement::of(from, to),
    };
    match (current, trigger) {
        (None, Trigger::Placed) => Reserve,
        (None, Trigger::Release(R::OrderCancelled)) => Tombstone,
        // Payment follows the reservation's own event, so its outcome can
        // only overtake a reservation that is still being made.
        (None, Trigger::PaymentSucceeded | Trigger::Release(R::PaymentFailed)) => NotYet,
        // Only a held reservation has a deadline.
        (None, Trigger::Release(R::Expired)) => Ignore,
        (Some(_), Trigger::Placed) => Ignore,
        (Some(Held), Trigger::PaymentSucceeded) => settle(Held, Committed),
        (Some(Held), Trigger::Release(_)) => settle(Held, Released),
        // Sold units come back only when the order itself is cancelled: a
        // late expiry or payment failure cannot undo a sale.
        (Some(Committed), Trigger::Release(R::OrderCancelled)) => settle(Committed, Released),
        (Some(Committed | Status::Rejected | Released), _) => Ignore,
    }
}

/// One line to reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// A SKU's units: `on_hand`, of which `reserved` are held for orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Units {
    pub on_hand: i64,
    pub reserved: i64,
}

impl Units {
    pub fn available(self) -> i64 {
        self.on_hand - self.reserved
    }

    /// These units after `movement` of `quantity`.
    pub fn moved(self, movement: Movement, quantity: Quantity) -> Self {
        let (on_hand, reserved) = movement.per_unit();
        let quantity = i64::from(quantity.get());
        Self {
            on_hand: self.on_hand + on_hand * quantity,
            reserved: self.reserved + reserved * quantity,
        }
    }
}

/// A line that could not be reserved, with what was available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub sku: String,
    pub requested: i32,
    pub available: i64,
}

/// Every line or none: `Ok` when each line's SKU has its quantity
/// available (`units` of a SKU without stock is `None`), else every line
/// that is short.
pub fn hold(lines: &[Line], units: impl Fn(&Sku) -> Option<Units>) -> Result<(), Vec<Shortage>> {
    let shortages: Vec<Shortage> = lines
        .iter()
        .filter_map(|line| {
            let available = units(&line.sku).map_or(0, Units::available);
            (available < i64::from(line.quantity.get())).then(|| Shortage {
                sku: line.sku.to_string(),
                requested: line.quantity.get(),
                available: available.max(0),
            })
        })
        .collect();
    if shortages.is_empty() { Ok(()) } else { Err(shortages) }
}

/// A line of an order as sold: `quantity` units, of which `returned` came
/// back with refunds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sold {
    pub quantity: i32,
    pub returned: i32,
}

impl Sold {
    /// Units still sold, which a refund may take back.
    pub fn left(self) -> i64 {
        i64::from(self.quantity) - i64::from(self.returned)
    }
}

/// Why a refund's units cannot go back in stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The order's units were never sold: its reservation (if any) is not
    /// committed.
    NotSold(Option<Status>),
    /// A returned SKU is not on the order.
    NotOnOrder { sku: String },
    /// More units of a SKU returned than are still sold.
    MoreThanSold { sku: String, returned: i32, left: i64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotSold(None) => write!(f, "the order has no reservation, so nothing of it was sold"),
            Self::NotSold(Some(status)) => {
                write!(
                    f,
                    "the order's reservation is {}, so nothing of it is sold",
                    status.as_str()
                )
            }
            Self::NotOnOrder { sku } => write!(f, "{sku} is not on the order"),
            Self::MoreThanSold { sku, returned, left } => {
                write!(f, "{returned} units of {sku} returned, but only {left} are still sold")
            }
        }
    }
}

/// Every line or none: whether a refund's `lines` (one per SKU) may go back
/// on hand, for an order whose reservation is `current` and whose sold
/// lines are `sold` (`None` for a SKU not on the order). Only a committed
/// reservation sold anything, and no more comes back than is still sold.
pub fn take_back(current: Option<Status>, lines: &[Line], sold: impl Fn(&Sku) -> Option<Sold>) -> Result<(), Refusal> {
    if current != Some(Status::Committed) {
        return Err(Refusal::NotSold(current));
    }
    for line in lines {
        let Some(sold) = sold(&line.sku) else {
            return Err(Refusal::NotOnOrder {
                sku: line.sku.to_string(),
            });
        };
        if i64::from(line.quantity.get()) > sold.left() {
            return Err(Refusal::MoreThanSold {
                sku: line.sku.to_string(),
                returned: line.quantity.get(),
                left: sold.left(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIGGERS: [Trigger; 5] = [
        Trigger::Placed,
        Trigger::PaymentSucceeded,
        Trigger::Release(ReleaseReason::Expired),
        Trigger::Release(ReleaseReason::PaymentFailed),
        Trigger::Release(ReleaseReason::OrderCancelled),
    ];
    const STATUSES: [Option<Status>; 5] = [
        None,
        Some(Status::Held),
        Some(Status::Rejected),
        Some(Status::Committed),
        Some(Status::Released),
    ];

    #[test]
    fn units_move_only_out_of_held_or_back_from_committed() {
        for current in STATUSES {
            for trigger in TRIGGERS {
                if let Decision::Move { to, units } = decide(current, trigger) {
                    let from = current.expect("a move starts from a reservation");
                    assert!(
                        matches!(
                            (from, to, units),
                            (Status::Held, Status::Committed, Some(Movement::Sell))
                                | (Status::Held, Status::Released, Some(Movement::Unhold))
                                | (Status::Committed, Status::Released, Some(Movement::Return))
                        ),
                        "{current:?} on {trigger:?} moved to {to:?} with {units:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn released_and_rejected_reservations_never_move() {
        for current in [Status::Released, Status::Rejected] {
            for trigger in TRIGGERS {
                assert_eq!(
                    decide(Some(current), trigger),
                    Decision::Ignore,
                    "{current:?} on {trigger:?}"
                );
            }
        }
    }

    #[test]
    fn a_sale_is_undone_only_by_the_orders_cancellation() {
        let committed = Some(Status::Committed);
        assert_eq!(
            decide(committed, Trigger::Release(ReleaseReason::OrderCancelled)),
            Decision::Move {
                to: Status::Released,
                units: Some(Movement::Return)
            }
        );
        for late in [ReleaseReason::Expired, ReleaseReason::PaymentFailed] {
            assert_eq!(decide(committed, Trigger::Release(late)), Decision::Ignore);
        }
    }

    #[test]
    fn what_comes_before_the_reservation() {
        assert_eq!(decide(None, Trigger::Placed), Decision::Reserve);
        assert_eq!(
            decide(None, Trigger::Release(ReleaseReason::OrderCancelled)),
            Decision::Tombstone
        );
        assert_eq!(decide(None, Trigger::PaymentSucceeded), Decision::NotYet);
        assert_eq!(
            decide(None, Trigger::Release(ReleaseReason::PaymentFailed)),
            Decision::NotYet
        );
    }

    #[test]
    fn a_refund_takes_back_only_what_a_committed_order_still_has_sold() {
        let line = |sku: &str, quantity| Line {
            sku: Sku::parse(sku).expect("valid SKU"),
            quantity: Quantity::new(quantity).expect("valid quantity"),
        };
        let sold = |sku: &Sku| match sku.as_str() {
            "SKU-A" => Some(Sold {
                quantity: 3,
                returned: 1,
            }),
            "SKU-B" => Some(Sold {
                quantity: 1,
                returned: 1,
            }),
            _ => None,
        };
        let committed = Some(Status::Committed);
        assert_eq!(take_back(committed, &[line("SKU-A", 2)], sold), Ok(()));
        assert_eq!(
            take_back(committed, &[line("SKU-A", 3)], sold),
            Err(Refusal::MoreThanSold {
                sku: "SKU-A".into(),
                returned: 3,
                left: 2
            })
        );
        assert!(matches!(
            take_back(committed, &[line("SKU-A", 1), line("SKU-B", 1)], sold),
            Err(Refusal::MoreThanSold { .. })
        ));
        assert_eq!(
            take_back(committed, &[line("SKU-C", 1)], sold),
            Err(Refusal::NotOnOrder { sku: "SKU-C".into() })
        );
        for current in STATUSES.into_iter().filter(|s| *s != committed) {
            assert_eq!(
                take_back(current, &[line("SKU-A", 1)], sold),
                Err(Refusal::NotSold(current)),
                "{current:?}"
            );
        }
        assert_eq!(
            Refusal::NotOnOrder { sku: "SKU-C".into() }.to_string(),
            "SKU-C is not on the order"
        );
    }

    #[test]
    fn statuses_round_trip_through_their_column() {
        for status in STATUSES.into_iter().flatten() {
            assert_eq!(Status::from_column(status.as_str()), Some(status));
        }
        assert_eq!(Status::from_column("sold"), None);
    }

    #[test]
    fn a_hold_takes_every_line_or_names_each_short_one() {
        let line = |sku: &str, quantity| Line {
            sku: Sku::parse(sku).expect("valid SKU"),
            quantity: Quantity::new(quantity).expect("valid quantity"),
        };
        let stock = |sku: &Sku| match sku.as_str() {
            "SKU-A" => Some(Units {
                on_hand: 5,
                reserved: 3,
            }),
            "SKU-B" => Some(Units {
                on_hand: 1,
                reserved: 0,
            }),
            _ => None,
        };
        assert_eq!(hold(&[line("SKU-A", 2), line("SKU-B", 1)], stock), Ok(()));
        let short = hold(&[line("SKU-A", 3), line("SKU-B", 1), line("SKU-C", 1)], stock).expect_err("short");
        let named: Vec<(&str, i64)> = short.iter().map(|s| (s.sku.as_str(), s.available)).collect();
        assert_eq!(named, [("SKU-A", 2), ("SKU-C", 0)]);

        let units = Units {
            on_hand: 5,
            reserved: 3,
        };
        let two = Quantity::new(2).expect("valid quantity");
        for (movement, on_hand, reserved) in [
            (Movement::Hold, 5, 5),
            (Movement::Sell, 3, 1),
            (Movement::Unhold, 5, 1),
            (Movement::Return, 7, 3),
        ] {
            assert_eq!(units.moved(movement, two), Units { on_hand, reserved }, "{movement:?}");
        }
    }
}
