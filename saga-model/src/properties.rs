//! What must hold in every state the checker reaches (`always`), in every
//! state where the system has come to rest (`eventually`), and what must be
//! reachable at all (`sometimes`, so that the model is not vacuous). Each
//! name is the one ARCHITECTURE.md uses.

use shop_provider::domain::Status as Intent;
use stateright::Property;
use svc_inventory::domain::Status as Reservation;
use svc_order::{
    domain::{CancelReason, Status},
    refunds::RefundStatus,
};
use svc_payment::refunds::Publish;

use crate::{
    Shop,
    world::{self, Card, Ledger, Order, State},
};

pub const CONFIRMED_IS_PAID_AND_SOLD: &str =
    "an order is confirmed only with its stock committed and one capture that no void gave back";
pub const TERMINAL_IS_FINAL: &str = "a terminal order never changes status, but a confirmed one by its refunds";
pub const STOCK_ADDS_UP: &str = "stock is never negative, and every unit is held, sold or on the shelf once";
pub const ONE_CAPTURE: &str = "at most one capture per order";
pub const REFUNDS_WITHIN_CAPTURE: &str = "no charge gives back more than it captured";
pub const AT_REST_CANCELLED_HOLDS_NO_MONEY: &str = "at rest, no money is held for a cancelled order";
pub const AT_REST_REFUNDS_AGREE: &str = "at rest, svc-order, svc-payment and the provider agree on every refund: succeeded and its amount given back once, or failed and nothing given back; the order's status says what came back";
pub const REFUND_WORD_NEVER_PARKED: &str = "svc-order never parks svc-payment's word on a refund";
pub const EVERY_ORDER_SETTLES: &str = "every order ends confirmed or cancelled";
pub const CANCELLED_MONEY_RETURNED: &str = "every order ends, and every charge of a cancelled one is returned";

/// Every property, safety first.
pub fn all() -> Vec<Property<Shop>> {
    let mut all = vec![
        Property::always(CONFIRMED_IS_PAID_AND_SOLD, |_, s: &State| {
            s.orders.iter().all(|o| {
                !confirmed(o.status)
                    || (o.reservation == Some(Reservation::Committed)
                        && o.captures == 1
                        && o.ledger.iter().filter(|l| capture_kept(l)).count() == 1)
            })
        }),
        Property::always(TERMINAL_IS_FINAL, |_, s: &State| {
            s.orders.iter().all(|o| {
                o.settled
                    .is_none_or(|settled| settled == o.status || confirmed(settled) && confirmed(o.status))
            })
        }),
        Property::always(STOCK_ADDS_UP, stock_adds_up),
        Property::always(ONE_CAPTURE, |_, s: &State| s.orders.iter().all(|o| o.captures <= 1)),
        Property::always(REFUNDS_WITHIN_CAPTURE, |_, s: &State| {
            s.orders
                .iter()
                .all(|o| o.ledger.iter().all(|l| l.refunded <= l.captured()))
        }),
        Property::always(AT_REST_CANCELLED_HOLDS_NO_MONEY, |shop: &Shop, s: &State| {
            !shop.at_rest(s) || s.orders.iter().all(|o| !cancelled_with_money(o))
        }),
        Property::always(AT_REST_REFUNDS_AGREE, |shop: &Shop, s: &State| {
            !shop.at_rest(s) || s.orders.iter().all(refunds_agree)
        }),
        Property::always(REFUND_WORD_NEVER_PARKED, |_, s: &State| {
            s.orders.iter().all(|o| !o.parked)
        }),
        Property::eventually(EVERY_ORDER_SETTLES, |_, s: &State| {
            s.orders.iter().all(|o| o.status.is_terminal())
        }),
        // Ended, so not already true before anything happened: stateright
        // takes an `eventually` as kept at the first state it holds in.
        Property::eventually(CANCELLED_MONEY_RETURNED, |_, s: &State| {
            s.orders
                .iter()
                .all(|o| o.status.is_terminal() && !cancelled_with_money(o))
        }),
        Property::sometimes("an order is confirmed", |_, s: &State| {
            s.orders.iter().any(|o| o.status == Status::Confirmed)
        }),
        Property::sometimes("a cancelled order's charge is refunded", |_, s: &State| {
            s.orders.iter().any(|o| {
                matches!(o.status, Status::Cancelled(_)) && o.ledger.iter().any(|l| l.voided && l.captured() > 0)
            })
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
        Property::sometimes(
            "an order is cancelled for its payment never authenticated",
            |_, s: &State| cancelled_for(s, CancelReason::PaymentNotAuthenticated),
        ),
    ]);
    all.extend([
        Property::sometimes("an order paid with 3-D Secure is confirmed", |_, s: &State| {
            confirmed_with(s, Card::ThreeDs)
        }),
        Property::sometimes("an order whose charge was processing is confirmed", |_, s: &State| {
            confirmed_with(s, Card::Async)
        }),
        Property::sometimes(
            "a charge never authenticated is cancelled at the provider",
            |_, s: &State| {
                s.orders.iter().any(|o| {
                    o.card == Card::ThreeDs
                        && o.ledger
                            .iter()
                            .any(|l| l.voided && l.intent == world::Intent::Made(Intent::Canceled))
                })
            },
        ),
        Property::sometimes("a confirmed order is refunded", |_, s: &State| {
            s.orders.iter().any(|o| o.status == Status::Refunded)
        }),
    ]);
    all
}

/// A capture standing under a key, whatever refunds of the confirmed order
/// gave back since: only a void takes a capture back.
fn capture_kept(line: &Ledger) -> bool {
    line.captured() > 0 && !line.voided
}

fn cancelled_for(s: &State, reason: CancelReason) -> bool {
    s.orders.iter().any(|o| o.status == Status::Cancelled(reason))
}

fn confirmed_with(s: &State, card: Card) -> bool {
    s.orders.iter().any(|o| o.card == card && o.status == Status::Confirmed)
}

fn cancelled_with_money(o: &Order) -> bool {
    matches!(o.status, Status::Cancelled(_)) && o.money_standing()
}

/// Confirmed, refunded since or not.
fn confirmed(status: Status) -> bool {
    matches!(status, Status::Confirmed | Status::PartiallyRefunded | Status::Refunded)
}

/// Each refund settled at svc-order as svc-payment announced it, and the
/// provider gave back what that says: the amount once, or nothing; the
/// order's status follows what succeeded refunds gave back.
fn refunds_agree(o: &Order) -> bool {
    let settled = o.refunds.iter().all(|r| match (r.ordered, r.announced) {
        (RefundStatus::Succeeded, Some(Publish::Refunded)) => r.given_back() == r.amount,
        (RefundStatus::Failed, Some(Publish::Failed)) => r.given_back() == 0,
        _ => false,
    });
    let back: u8 = o
        .refunds
        .iter()
        .filter(|r| r.ordered == RefundStatus::Succeeded)
        .map(|r| r.amount)
        .sum();
    let status = match back {
        0 => Status::Confirmed,
        back if back < o.total => Status::PartiallyRefunded,
        _ => Status::Refunded,
    };
    settled && (o.refunds.is_empty() || o.status == status)
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
