//! What must hold in every state the checker reaches (`always`), in every
//! state where the system has come to rest (`eventually`), and what must be
//! reachable at all (`sometimes`, so that the model is not vacuous). Each
//! name is the one ARCHITECTURE.md uses.

use stateright::Property;
use svc_inventory::domain::Status as Reservation;
use svc_order::domain::{CancelReason, Status};

use crate::{
    Shop,
    world::{Ledger, Order, State},
};

pub const CONFIRMED_IS_PAID_AND_SOLD: &str =
    "an order is confirmed only with its stock committed and one capture standing";
pub const TERMINAL_IS_FINAL: &str = "a terminal order never changes status";
pub const STOCK_ADDS_UP: &str = "stock is never negative, and every unit is held, sold or on the shelf once";
pub const ONE_CAPTURE: &str = "at most one capture per order";
pub const QUIET_CANCELLED_HOLDS_NO_MONEY: &str = "once quiet, no money is held for a cancelled order";
pub const EVERY_ORDER_SETTLES: &str = "every order ends confirmed or cancelled";
pub const CANCELLED_MONEY_RETURNED: &str = "every charge of a cancelled order is returned";

/// Every property, safety first.
pub fn all() -> Vec<Property<Shop>> {
    let mut all = vec![
        Property::always(CONFIRMED_IS_PAID_AND_SOLD, |_, s: &State| {
            s.orders.iter().all(|o| {
                o.status != Status::Confirmed
                    || (o.reservation == Some(Reservation::Committed)
                        && o.captures == 1
                        && o.ledger.iter().filter(|l| **l == Ledger::Captured).count() == 1)
            })
        }),
        Property::always(TERMINAL_IS_FINAL, |_, s: &State| {
            s.orders
                .iter()
                .all(|o| o.settled.is_none_or(|settled| settled == o.status))
        }),
        Property::always(STOCK_ADDS_UP, stock_adds_up),
        Property::always(ONE_CAPTURE, |_, s: &State| s.orders.iter().all(|o| o.captures <= 1)),
        Property::always(QUIET_CANCELLED_HOLDS_NO_MONEY, |_, s: &State| {
            !s.is_quiet() || s.orders.iter().all(|o| !cancelled_with_money(o))
        }),
        Property::eventually(EVERY_ORDER_SETTLES, |_, s: &State| {
            s.orders.iter().all(|o| o.status.is_terminal())
        }),
        Property::eventually(CANCELLED_MONEY_RETURNED, |_, s: &State| {
            s.orders.iter().all(|o| !cancelled_with_money(o))
        }),
        Property::sometimes("an order is confirmed", |_, s: &State| {
            s.orders.iter().any(|o| o.status == Status::Confirmed)
        }),
        Property::sometimes("a cancelled order's charge is refunded", |_, s: &State| {
            s.orders
                .iter()
                .any(|o| matches!(o.status, Status::Cancelled(_)) && o.ledger.contains(&Ledger::Refunded))
        }),
    ];
    all.extend([
        Property::sometimes("an order is cancelled out of stock", |_, s: &State| {
            cancelled_for(s, CancelReason::OutOfStock)
        }),
        Property::sometimes("an order is cancelled for its declined payment", |_, s: &State| {
            cancelled_for(s, CancelReason::PaymentDeclined)
        }),
        Property::sometimes("an order is cancelled when its reservation expired", |_, s: &State| {
            cancelled_for(s, CancelReason::ReservationExpired)
        }),
        Property::sometimes("an order is cancelled by its customer", |_, s: &State| {
            cancelled_for(s, CancelReason::CustomerCancelled)
        }),
        Property::sometimes("an order is cancelled past its deadline", |_, s: &State| {
            cancelled_for(s, CancelReason::TimedOut)
        }),
    ]);
    all
}

fn cancelled_for(s: &State, reason: CancelReason) -> bool {
    s.orders.iter().any(|o| o.status == Status::Cancelled(reason))
}

fn cancelled_with_money(o: &Order) -> bool {
    matches!(o.status, Status::Cancelled(_)) && o.money_standing()
}

/// Units are conserved: `reserved` is what held reservations hold, and
/// `on_hand` what was stocked less what committed reservations sold.
fn stock_adds_up(shop: &Shop, s: &State) -> bool {
    let (mut held, mut sold) = (0, 0);
    let orders = s
        .orders
        .iter()
        .zip(&shop.config.orders)
        .map(|(o, &q)| (o.reservation, q));
    let rivals = s.rivals.iter().map(|r| (r.reservation, r.quantity));
    for (reservation, q) in orders.chain(rivals) {
        match reservation {
            Some(Reservation::Held) => held += i64::from(q),
            Some(Reservation::Committed) => sold += i64::from(q),
            _ => {}
        }
    }
    s.units.reserved >= 0
        && s.units.available() >= 0
        && s.units.reserved == held
        && s.units.on_hand == shop.config.stock - sold
}
