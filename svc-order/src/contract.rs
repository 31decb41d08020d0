//! The contract's spelling of svc-order's domain values, for the gRPC
//! adapter and the events alike: one mapping each, so the API and
//! `orders.cancelled` can never disagree.

use shop_proto::order::v1 as pb;

use crate::domain::CancelReason;

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
}
