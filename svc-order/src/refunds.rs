//! Refunds of a confirmed order: what an admin may ask back, and what each
//! refund becomes.
//!
//! A refund names lines of the order and how many units of each come back
//! (none named: all that is left), at the prices the order was paid at.
//! What is left of a SKU is what was ordered less what refunds pending or
//! succeeded took: a failed refund gave nothing back, so its units are
//! left again. So an order is refunded at most its total, and the order's
//! row lock, under which every refund is planned and recorded, keeps two
//! refunds from taking the same units. Each refund settles once, on
//! svc-payment's word:
//!
//! ```text
//! PENDING ──payments.refunded──────▶ SUCCEEDED   the order hears RefundSucceeded { fully }
//!    └──────payments.refund_failed──▶ FAILED      the order hears RefundFailed
//! ```
//! and the order's status follows what succeeded refunds gave back
//! ([`crate::domain::decide`]): PARTIALLY_REFUNDED, then REFUNDED once they
//! add up to its total.

use std::collections::BTreeMap;

use shop_runtime::values::{IdempotencyKey, Money, Quantity, Sku};
use uuid::Uuid;

use crate::domain::{self, FieldError, PricedLine, RequestedLine, Status, Trigger};

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundStatus {
    /// Asked of svc-payment, not settled yet.
    Pending,
    /// Given back.
    Succeeded,
    /// svc-payment gave up on it: nothing was given back.
    Failed,
}

impl RefundStatus {
    pub const ALL: [Self; 3] = [Self::Pending, Self::Succeeded, Self::Failed];

    /// As stored in `order_refunds.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn from_column(status: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == status)
    }

    /// Whether the refund holds its units: given back, or being given
    /// back. A failed refund holds none.
    fn holds_its_units(self) -> bool {
        match self {
            Self::Pending | Self::Succeeded => true,
            Self::Failed => false,
        }
    }
}

/// What svc-payment says became of a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `payments.refunded` naming the refund.
    Succeeded,
    /// `payments.refund_failed`.
    Failed,
}

/// A validated `RefundOrder` request.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub key: IdempotencyKey,
    /// What comes back; none: all that is left.
    pub lines: Vec<RequestedLine>,
    /// The units go back in stock.
    pub restock: bool,
}

impl RefundRequest {
    /// Canonical text of the request: the same key may only come back with
    /// the same fingerprint.
    pub fn fingerprint(&self) -> String {
        let lines = if self.lines.is_empty() {
            "all".to_owned()
        } else {
            let mut lines: Vec<String> = self
                .lines
                .iter()
                .map(|l| format!("{}x{}", l.sku, l.quantity.get()))
                .collect();
            lines.sort();
            lines.join(",")
        };
        let stock = if self.restock { "restock" } else { "keep" };
        format!("v1|{stock}|{lines}")
    }

    /// Whether a refund recorded earlier under this key came from the same
    /// request: only then is a retry answered with it.
    pub fn is_retry_of(&self, fingerprint: &str) -> bool {
        self.fingerprint() == fingerprint
    }
}

/// Validates the raw request parts; the first problem is reported.
pub fn validate_refund_order(key: &str, lines: &[(String, i32)], restock: bool) -> Result<RefundRequest, FieldError> {
    let key = IdempotencyKey::parse(key).map_err(|reason| FieldError {
        field: "idempotency_key".into(),
        reason,
    })?;
    Ok(RefundRequest {
        key,
        lines: domain::requested_lines(lines)?,
        restock,
    })
}

/// A refund as its order keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub refund_id: Uuid,
    pub status: RefundStatus,
    /// What comes back, at the prices paid.
    pub lines: Vec<PricedLine>,
    pub amount: Money,
}

/// An order as its refunds see it.
#[derive(Debug, Clone)]
pub struct Refundable {
    pub status: Status,
    /// As ordered, at the prices paid (each SKU once).
    pub lines: Vec<PricedLine>,
    pub total: Money,
    /// Its refunds so far.
    pub refunds: Vec<Refund>,
}

/// A refund to record: its lines at the prices paid, and what they come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRefund {
    pub lines: Vec<PricedLine>,
    pub amount: Money,
}

/// Why a refund cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the order is {}; only a CONFIRMED or PARTIALLY_REFUNDED order can be refunded", .0.name())]
    NotRefundable(Status),
    #[error("nothing is left to refund: all of the order's {} is refunded or being refunded", *.total)]
    NothingLeft { total: Money },
    /// A request's line names a SKU the order does not have (the
    /// request's fault: `lines[<line>].sku`).
    #[error("{sku} is not on this order")]
    NotOnOrder { line: usize, sku: Sku },
    #[error(
        "lines[{line}]: {}; only {} is left to refund of the whole order",
        units_left(.sku, *.left, *.asked),
        *.left_amount
    )]
    MoreThanLeft {
        line: usize,
        sku: Sku,
        asked: i32,
        left: i32,
        left_amount: Money,
    },
    #[error("these lines cost nothing: a refund of {} gives nothing back", *.amount)]
    NothingToGive { amount: Money },
    #[error("the refund cannot be totalled (amount too large)")]
    CannotTotal,
}

fn units_left(sku: &Sku, left: i32, asked: i32) -> String {
    match left {
        0 => format!("nothing of {sku} is left to refund ({asked} asked)"),
        _ => format!("only {left} of {sku} is left to refund ({asked} asked)"),
    }
}

/// What svc-payment's word on one refund does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The refund becomes `to`, and the order hears `trigger`.
    Settle { to: RefundStatus, trigger: Trigger },
    /// Settled so already: a repeat changes nothing.
    Repeat,
    /// Settled the other way already; svc-payment settles a refund once,
    /// so this is a contradiction to look into. It changes nothing.
    Contradicts(RefundStatus),
    /// The order has no refund with that id.
    Unknown,
}

/// A SKU's units left to refund and the price each was paid at.
#[derive(Debug, Clone, Copy)]
struct Left {
    units: i32,
    unit_price: Money,
}

impl Refundable {
    /// What is left to refund of each SKU of the order, in SKU order:
    /// what was ordered less what pending and succeeded refunds took.
    fn left(&self) -> BTreeMap<&Sku, Left> {
        let mut left: BTreeMap<&Sku, Left> = BTreeMap::new();
        for line in &self.lines {
            let entry = left.entry(&line.sku).or_insert(Left {
                units: 0,
                unit_price: line.unit_price,
            });
            entry.units = entry.units.saturating_add(line.quantity.get());
        }
        let taken = self.refunds.iter().filter(|r| r.status.holds_its_units());
        for line in taken.flat_map(|r| &r.lines) {
            if let Some(entry) = left.get_mut(&line.sku) {
                entry.units = entry.units.saturating_sub(line.quantity.get()).max(0);
            }
        }
        left
    }

    /// What is left to refund of the whole order.
    fn left_amount(left: &BTreeMap<&Sku, Left>, zero: Money) -> Option<Money> {
        left.values().try_fold(zero, |sum, l| {
            let units = i64::from(l.units);
            sum.plus(Money::new(
                l.unit_price.currency,
                l.unit_price.minor.checked_mul(units)?,
            ))
        })
    }

    /// What the succeeded refunds gave back.
    pub fn refunded(&self) -> Money {
        let given_back = self.refunds.iter().filter(|r| r.status == RefundStatus::Succeeded);
        let minor = given_back.fold(0i64, |sum, r| sum.saturating_add(r.amount.minor));
        Money::new(self.total.currency, minor)
    }

    /// The refund `request` asks for: the lines named (none: all that is
    /// left), each no more than is left of its SKU, at the prices paid.
    pub fn plan(&self, request: &RefundRequest) -> Result<PlannedRefund, Refused> {
        if !matches!(self.status, Status::Confirmed | Status::PartiallyRefunded) {
            return Err(Refused::NotRefundable(self.status));
        }
        let left = self.left();
        let zero = Money::new(self.total.currency, 0);
        let left_amount = Self::left_amount(&left, zero).ok_or(Refused::CannotTotal)?;
        if left.values().all(|l| l.units == 0) {
            return Err(Refused::NothingLeft { total: self.total });
        }
        let lines: Vec<PricedLine> = if request.lines.is_empty() {
            left.iter()
                .filter_map(|(sku, l)| {
                    Some(PricedLine {
                        sku: (*sku).clone(),
                        quantity: Quantity::new(l.units).ok()?,
                        unit_price: l.unit_price,
                    })
                })
                .collect()
        } else {
            request
                .lines
                .iter()
                .enumerate()
                .map(|(line, asked)| {
                    let Some(l) = left.get(&asked.sku) else {
                        return Err(Refused::NotOnOrder {
                            line,
                            sku: asked.sku.clone(),
                        });
                    };
                    if asked.quantity.get() > l.units {
                        return Err(Refused::MoreThanLeft {
                            line,
                            sku: asked.sku.clone(),
                            asked: asked.quantity.get(),
                            left: l.units,
                            left_amount,
                        });
                    }
                    Ok(PricedLine {
                        sku: asked.sku.clone(),
                        quantity: asked.quantity,
                        unit_price: l.unit_price,
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let amount = lines
            .iter()
            .try_fold(zero, |sum, l| sum.plus(l.unit_price.times(l.quantity)?))
            .ok_or(Refused::CannotTotal)?;
        if amount.minor == 0 {
            return Err(Refused::NothingToGive { amount });
        }
        Ok(PlannedRefund { lines, amount })
    }

    /// What svc-payment's word that refund `refund_id` ended `outcome`
    /// does: the refund settles once, and the order hears whether its
    /// succeeded refunds now add up to its total.
    pub fn settle(&self, refund_id: Uuid, outcome: Outcome) -> Settlement {
        let Some(refund) = self.refunds.iter().find(|r| r.refund_id == refund_id) else {
            return Settlement::Unknown;
        };
        match (refund.status, outcome) {
            (RefundStatus::Pending, Outcome::Succeeded) => {
                let refunded = self.refunded().minor.saturating_add(refund.amount.minor);
                Settlement::Settle {
                    to: RefundStatus::Succeeded,
                    trigger: Trigger::RefundSucceeded {
                        fully: refunded >= self.total.minor,
                    },
                }
            }
            (RefundStatus::Pending, Outcome::Failed) => Settlement::Settle {
                to: RefundStatus::Failed,
                trigger: Trigger::RefundFailed,
            },
            (RefundStatus::Succeeded, Outcome::Succeeded) | (RefundStatus::Failed, Outcome::Failed) => {
                Settlement::Repeat
            }
            (settled @ (RefundStatus::Succeeded | RefundStatus::Failed), _) => Settlement::Contradicts(settled),
        }
    }
}

#[cfg(test)]
mod tests {
    use shop_runtime::values::Currency;

    use super::*;
    use crate::domain::{CancelReason, PaymentWait};

    fn eur(minor: i64) -> Money {
        Money::new(Currency::parse("EUR").expect("valid"), minor)
    }

    fn line(sku: &str, quantity: i32, unit_price: i64) -> PricedLine {
        PricedLine {
            sku: Sku::parse(sku).expect("valid SKU"),
            quantity: Quantity::new(quantity).expect("valid quantity"),
            unit_price: eur(unit_price),
        }
    }

    fn request(lines: &[(&str, i32)]) -> RefundRequest {
        let lines: Vec<(String, i32)> = lines.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect();
        validate_refund_order("return-1", &lines, true).expect("valid")
    }

    /// Two mugs at 12.99 and a cap at 5.00: 30.98 in all.
    fn order(status: Status, refunds: Vec<Refund>) -> Refundable {
        Refundable {
            status,
            lines: vec![line("SKU-MUG-001", 2, 1299), line("SKU-CAP-001", 1, 500)],
            total: eur(3098),
            refunds,
        }
    }

    fn refund(status: RefundStatus, lines: Vec<PricedLine>) -> Refund {
        let amount = lines
            .iter()
            .map(|l| l.unit_price.minor * i64::from(l.quantity.get()))
            .sum();
        Refund {
            refund_id: Uuid::now_v7(),
            status,
            lines,
            amount: eur(amount),
        }
    }

    #[test]
    fn validation_names_the_field_and_allows_no_lines() {
        let case = |key: &str, lines: &[(&str, i32)]| {
            let lines: Vec<(String, i32)> = lines.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect();
            validate_refund_order(key, &lines, false)
                .map(|r| r.lines.len())
                .map_err(|e| format!("{}: {}", e.field, e.reason))
        };
        assert_eq!(case("k", &[]), Ok(0), "no lines: all that is left");
        assert_eq!(case("k", &[("SKU-A", 1), ("SKU-B", 2)]), Ok(2));
        assert!(case("", &[]).is_err_and(|e| e.starts_with("idempotency_key: is required")));
        assert!(case("a key", &[]).is_err_and(|e| e.starts_with("idempotency_key:")));
        assert_eq!(
            case("k", &[("SKU-A", 0)]),
            Err("lines[0].quantity: must be positive, got 0".to_owned())
        );
        assert_eq!(
            case("k", &[("SKU-A", 1), ("SKU-B", -2)]),
            Err("lines[1].quantity: must be positive, got -2".to_owned())
        );
        assert!(case("k", &[("bad sku", 1)]).is_err_and(|e| e.starts_with("lines[0].sku:")));
        assert!(case("k", &[("SKU-A", 1), ("SKU-A", 1)]).is_err_and(|e| e.starts_with("lines[1].sku:")));
    }

    #[test]
    fn a_retry_is_the_same_lines_and_restock_in_any_order() {
        let a = request(&[("SKU-A", 1), ("SKU-B", 2)]);
        let b = request(&[("SKU-B", 2), ("SKU-A", 1)]);
        assert!(a.is_retry_of(&b.fingerprint()));
        assert!(!a.is_retry_of(&request(&[("SKU-A", 1), ("SKU-B", 1)]).fingerprint()));
        assert!(
            !a.is_retry_of(&request(&[]).fingerprint()),
            "all that is left is another request"
        );
        let kept = RefundRequest {
            restock: false,
            ..a.clone()
        };
        assert!(!a.is_retry_of(&kept.fingerprint()), "restock is part of the request");
        assert!(request(&[]).is_retry_of(&request(&[]).fingerprint()));
    }

    #[test]
    fn only_a_confirmed_or_partially_refunded_order_can_be_refunded() {
        for status in crate::domain::tests::ALL_STATUSES {
            let planned = order(status, vec![]).plan(&request(&[("SKU-CAP-001", 1)]));
            match status {
                Status::Confirmed | Status::PartiallyRefunded => assert!(planned.is_ok(), "{status:?}: {planned:?}"),
                _ => assert_eq!(planned, Err(Refused::NotRefundable(status)), "{status:?}"),
            }
        }
        let cancelled = Refused::NotRefundable(Status::Cancelled(CancelReason::PaymentDeclined));
        assert_eq!(
            cancelled.to_string(),
            "the order is CANCELLED; only a CONFIRMED or PARTIALLY_REFUNDED order can be refunded"
        );
        let reserved = Refused::NotRefundable(Status::Reserved(Some(PaymentWait::Processing)));
        assert!(reserved.to_string().starts_with("the order is RESERVED;"));
    }

    #[test]
    fn a_refund_is_priced_at_what_the_order_paid() {
        let planned = order(Status::Confirmed, vec![]).plan(&request(&[("SKU-MUG-001", 1)]));
        assert_eq!(
            planned,
            Ok(PlannedRefund {
                lines: vec![line("SKU-MUG-001", 1, 1299)],
                amount: eur(1299),
            })
        );
    }

    #[test]
    fn no_lines_refunds_all_that_is_left() {
        let whole = order(Status::Confirmed, vec![]).plan(&request(&[])).expect("planned");
        assert_eq!(whole.amount, eur(3098));
        assert_eq!(whole.lines.len(), 2);

        let one_mug = refund(RefundStatus::Succeeded, vec![line("SKU-MUG-001", 1, 1299)]);
        let rest = order(Status::PartiallyRefunded, vec![one_mug]).plan(&request(&[]));
        assert_eq!(
            rest,
            Ok(PlannedRefund {
                lines: vec![line("SKU-CAP-001", 1, 500), line("SKU-MUG-001", 1, 1299)],
                amount: eur(1799),
            })
        );
    }

    #[test]
    fn pending_and_succeeded_refunds_take_their_units_and_failed_ones_give_them_back() {
        let mug = || vec![line("SKU-MUG-001", 1, 1299)];
        let taken = vec![
            refund(RefundStatus::Succeeded, mug()),
            refund(RefundStatus::Pending, vec![line("SKU-CAP-001", 1, 500)]),
        ];
        let order_now = order(Status::PartiallyRefunded, taken.clone());
        let more = order_now.plan(&request(&[("SKU-MUG-001", 2)]));
        assert_eq!(
            more,
            Err(Refused::MoreThanLeft {
                line: 0,
                sku: Sku::parse("SKU-MUG-001").expect("valid"),
                asked: 2,
                left: 1,
                left_amount: eur(1299),
            })
        );
        let message = more.expect_err("refused").to_string();
        assert_eq!(
            message,
            "lines[0]: only 1 of SKU-MUG-001 is left to refund (2 asked); \
             only EUR 12.99 is left to refund of the whole order"
        );
        let cap = order_now
            .plan(&request(&[("SKU-CAP-001", 1)]))
            .expect_err("pending holds it");
        assert!(
            cap.to_string()
                .starts_with("lines[0]: nothing of SKU-CAP-001 is left to refund (1 asked);"),
            "{cap}"
        );

        // The pending refund failed: its cap can be refunded again.
        let failed = vec![
            taken[0].clone(),
            refund(RefundStatus::Failed, vec![line("SKU-CAP-001", 1, 500)]),
        ];
        let again = order(Status::PartiallyRefunded, failed).plan(&request(&[("SKU-CAP-001", 1)]));
        assert_eq!(again.map(|p| p.amount), Ok(eur(500)));
    }

    #[test]
    fn nothing_left_is_refused_whole_or_by_line() {
        let all = vec![refund(
            RefundStatus::Pending,
            vec![line("SKU-MUG-001", 2, 1299), line("SKU-CAP-001", 1, 500)],
        )];
        let being_refunded = order(Status::Confirmed, all);
        for asked in [request(&[]), request(&[("SKU-CAP-001", 1)])] {
            let refused = being_refunded.plan(&asked);
            assert_eq!(refused, Err(Refused::NothingLeft { total: eur(3098) }));
        }
        assert_eq!(
            Refused::NothingLeft { total: eur(3098) }.to_string(),
            "nothing is left to refund: all of the order's EUR 30.98 is refunded or being refunded"
        );
    }

    #[test]
    fn a_sku_not_on_the_order_is_named_with_its_line() {
        let refused = order(Status::Confirmed, vec![]).plan(&request(&[("SKU-CAP-001", 1), ("SKU-HAT-001", 1)]));
        assert_eq!(
            refused,
            Err(Refused::NotOnOrder {
                line: 1,
                sku: Sku::parse("SKU-HAT-001").expect("valid"),
            })
        );
    }

    #[test]
    fn a_refund_of_nothing_but_free_lines_is_refused() {
        let mut free = order(Status::Confirmed, vec![]);
        free.lines.push(line("SKU-STICKER-001", 3, 0));
        let refused = free.plan(&request(&[("SKU-STICKER-001", 3)]));
        assert_eq!(refused, Err(Refused::NothingToGive { amount: eur(0) }));
        assert_eq!(
            free.plan(&request(&[("SKU-STICKER-001", 1), ("SKU-CAP-001", 1)]))
                .map(|p| p.amount),
            Ok(eur(500))
        );
    }

    #[test]
    fn each_refund_settles_once_and_the_order_hears_whether_all_came_back() {
        let mug = refund(RefundStatus::Pending, vec![line("SKU-MUG-001", 2, 1299)]);
        let cap = refund(RefundStatus::Pending, vec![line("SKU-CAP-001", 1, 500)]);
        let (mug_id, cap_id) = (mug.refund_id, cap.refund_id);
        let mut o = order(Status::Confirmed, vec![mug, cap]);
        let settle = |to, fully| Settlement::Settle {
            to,
            trigger: Trigger::RefundSucceeded { fully },
        };

        assert_eq!(
            o.settle(mug_id, Outcome::Succeeded),
            settle(RefundStatus::Succeeded, false)
        );
        o.refunds[0].status = RefundStatus::Succeeded;
        assert_eq!(o.refunded(), eur(2598));
        assert_eq!(o.settle(mug_id, Outcome::Succeeded), Settlement::Repeat);
        assert_eq!(
            o.settle(mug_id, Outcome::Failed),
            Settlement::Contradicts(RefundStatus::Succeeded)
        );
        assert_eq!(
            o.settle(cap_id, Outcome::Succeeded),
            settle(RefundStatus::Succeeded, true)
        );
        assert_eq!(
            o.settle(cap_id, Outcome::Failed),
            Settlement::Settle {
                to: RefundStatus::Failed,
                trigger: Trigger::RefundFailed,
            }
        );
        o.refunds[1].status = RefundStatus::Failed;
        assert_eq!(o.refunded(), eur(2598), "a failed refund gave nothing back");
        assert_eq!(o.settle(cap_id, Outcome::Failed), Settlement::Repeat);
        assert_eq!(
            o.settle(cap_id, Outcome::Succeeded),
            Settlement::Contradicts(RefundStatus::Failed)
        );
        assert_eq!(o.settle(Uuid::now_v7(), Outcome::Succeeded), Settlement::Unknown);
    }

    #[test]
    fn refund_statuses_round_trip_through_their_column() {
        for status in RefundStatus::ALL {
            assert_eq!(RefundStatus::from_column(status.as_str()), Some(status));
        }
        assert_eq!(RefundStatus::from_column("refunded"), None);
    }
}
