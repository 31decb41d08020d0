//! The contract's spelling of svc-order's domain values, for the gRPC
//! adapter and the events alike: one mapping each, so the API and
//! `orders.cancelled` can never disagree.

use shop_proto::order::v1 as pb;

use crate::{
    domain::{CancelReason, PaymentWait, Status},
    refunds::RefundStatus,
};

/// The status as `Order.status` shows it, with its cancel reason
/// (`Unspecified` unless cancelled).
pub(crate) fn order_status(status: Status) -> (pb::OrderStatus, pb::CancelReason) {
    let shown = match status {
        Status::Pending => pb::OrderStatus::Pending,
        Status::Reserved(_) => pb::OrderStatus::Reserved,
        Status::Confirmed => pb::OrderStatus::Confirmed,
        Status::PartiallyRefunded => pb::OrderStatus::PartiallyRefunded,
        Status::Refunded => pb::OrderStatus::Refunded,
        Status::Cancelled(reason) => return (pb::OrderStatus::Cancelled, cancel_reason(reason)),
    };
    (shown, pb::CancelReason::Unspecified)
}

/// A refund's status as `Refund.status` shows it.
pub(crate) fn refund_status(status: RefundStatus) -> pb::RefundStatus {
    match status {
        RefundStatus::Pending => pb::RefundStatus::Pending,
        RefundStatus::Succeeded => pb::RefundStatus::Succeeded,
        RefundStatus::Failed => pb::RefundStatus::Failed,
    }
}

/// The reason as the contract spells it. `orders.cancelled` carries the same
/// number in its own enum (`OrderCancelReason`), so this is the one mapping
/// of both; a test holds the two enums to the same numbers.
pub(crate) fn cancel_reason(reason: CancelReason) -> pb::CancelReason {
    match reason {
        CancelReason::OutOfStock => pb::CancelReason::OutOfStock,
        CancelReason::PaymentDeclined => pb::CancelReason::PaymentDeclined,
        CancelReason::ReservationExpired => pb::CancelReason::ReservationExpired,
        CancelReason::CustomerCancelled => pb::CancelReason::CustomerCancelled,
        CancelReason::TimedOut => pb::CancelReason::TimedOut,
        CancelReason::PaymentNotAuthenticated => pb::CancelReason::PaymentNotAuthenticated,
    }
}

/// What the order's payment waits for, as `Order.payment_wait` says it:
/// only while the order is reserved.
pub(crate) fn payment_wait(status: Status) -> pb::PaymentWait {
    match status {
        Status::Reserved(Some(PaymentWait::Processing)) => pb::PaymentWait::Processing,
        Status::Reserved(Some(PaymentWait::CustomerAction)) => pb::PaymentWait::CustomerAction,
        Status::Pending
        | Status::Reserved(None)
        | Status::Confirmed
        | Status::PartiallyRefunded
        | Status::Refunded
        | Status::Cancelled(_) => pb::PaymentWait::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use shop_proto::events::v1 as ev;

    use super::*;

    #[test]
    fn the_api_and_the_event_give_each_cancel_reason_the_same_number() {
        for reason in CancelReason::ALL {
            let number = cancel_reason(reason) as i32;
            let event = ev::OrderCancelReason::try_from(number).expect("a number of the event's enum");
            assert_eq!(
                event.as_str_name(),
                format!("ORDER_{}", cancel_reason(reason).as_str_name()),
                "{reason:?}"
            );
        }
    }

    /// A reason the contract gains is one the domain can give, and the
    /// event's enum has no reason the API's lacks.
    #[test]
    fn every_reason_of_the_contract_is_one_of_the_domain() {
        let given: Vec<i32> = CancelReason::ALL.into_iter().map(|r| cancel_reason(r) as i32).collect();
        for number in (1..).take_while(|n| pb::CancelReason::try_from(*n).is_ok()) {
            assert!(given.contains(&number), "{:?}", pb::CancelReason::try_from(number));
        }
        for number in (1..).take_while(|n| ev::OrderCancelReason::try_from(*n).is_ok()) {
            assert!(given.contains(&number), "{:?}", ev::OrderCancelReason::try_from(number));
        }
        assert!(pb::CancelReason::try_from(given.len() as i32 + 1).is_err());
        assert!(ev::OrderCancelReason::try_from(given.len() as i32 + 1).is_err());
    }

    /// Each status is shown as the contract names it (and as messages
    /// name it, `Status::name`), and the contract has no status the domain
    /// cannot reach.
    #[test]
    fn every_status_is_shown_by_its_name_and_the_contract_has_no_other() {
        let mut shown = Vec::new();
        for status in crate::domain::tests::ALL_STATUSES {
            let (number, reason) = order_status(status);
            assert_eq!(
                number.as_str_name(),
                format!("ORDER_STATUS_{}", status.name()),
                "{status:?}"
            );
            let cancelled = matches!(status, Status::Cancelled(_));
            assert_eq!(reason != pb::CancelReason::Unspecified, cancelled, "{status:?}");
            shown.push(number as i32);
        }
        for number in (1..).take_while(|n| pb::OrderStatus::try_from(*n).is_ok()) {
            assert!(shown.contains(&number), "{:?}", pb::OrderStatus::try_from(number));
        }
        let refunds: Vec<i32> = RefundStatus::ALL.into_iter().map(|s| refund_status(s) as i32).collect();
        for number in (1..).take_while(|n| pb::RefundStatus::try_from(*n).is_ok()) {
            assert!(refunds.contains(&number), "{:?}", pb::RefundStatus::try_from(number));
        }
        for status in RefundStatus::ALL {
            assert_eq!(
                refund_status(status).as_str_name(),
                format!("REFUND_STATUS_{}", status.as_str().to_uppercase())
            );
        }
    }

    #[test]
    fn only_a_reserved_order_shows_what_its_payment_waits_for() {
        assert_eq!(
            payment_wait(Status::Reserved(Some(PaymentWait::Processing))),
            pb::PaymentWait::Processing
        );
        assert_eq!(
            payment_wait(Status::Reserved(Some(PaymentWait::CustomerAction))),
            pb::PaymentWait::CustomerAction
        );
        let others = [
            Status::Pending,
            Status::Reserved(None),
            Status::Confirmed,
            Status::PartiallyRefunded,
            Status::Refunded,
        ]
        .into_iter()
        .chain(CancelReason::ALL.map(Status::Cancelled));
        for status in others {
            assert_eq!(payment_wait(status), pb::PaymentWait::Unspecified, "{status:?}");
        }
    }
}
