//! What the customer reads: subject and body of each email, and where it
//! goes. Pure text, no I/O.

use lettre::Address;
use shop_proto::events::v1::OrderCancelReason;
use shop_runtime::values::Money;

/// Which event an email is about; at most one email per order and kind
/// (and refund, for a refund's emails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OrderConfirmed,
    OrderCancelled,
    /// A refund of a confirmed order gave money back.
    RefundSucceeded,
    /// A refund of a confirmed order could not be made.
    RefundFailed,
}

impl Kind {
    /// The `notifications.kind` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderConfirmed => "order_confirmed",
            Self::OrderCancelled => "order_cancelled",
            Self::RefundSucceeded => "refund_succeeded",
            Self::RefundFailed => "refund_failed",
        }
    }
}

/// Subject and plain-text body of one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub subject: String,
    pub body: String,
}

/// The email for a confirmed order.
pub fn confirmed(order_id: &str, total: Option<Money>) -> Draft {
    let mut body = String::from(
        "Hello,\n\nthank you for your order. Your payment went through and the items are set aside for you.\n\n",
    );
    body.push_str(&summary(order_id, total));
    body.push_str(SIGN_OFF);
    Draft {
        subject: format!("Order {order_id} is confirmed"),
        body,
    }
}

/// The email for a cancelled order, explaining why.
pub fn cancelled(order_id: &str, reason: OrderCancelReason, total: Option<Money>) -> Draft {
    let mut body = format!("Hello,\n\nyour order was cancelled. {}\n\n", reason_sentence(reason));
    body.push_str(&summary(order_id, total));
    body.push_str(SIGN_OFF);
    Draft {
        subject: format!("Order {order_id} was cancelled"),
        body,
    }
}

/// The email for a refund of a confirmed order that went through:
/// `amount` is what it gave back.
pub fn refunded(order_id: &str, amount: Option<Money>) -> Draft {
    let refunded = match amount {
        Some(amount) => format!("we have refunded {} for your order", amount),
        None => "we have made a refund for your order".to_owned(),
    };
    let mut body = format!(
        "Hello,\n\n{refunded}. It goes back to the payment method you paid with; your bank may take a few \
         days to show it.\n\n"
    );
    body.push_str(&refund_summary(order_id, amount));
    body.push_str(SIGN_OFF);
    Draft {
        subject: format!("Your refund for order {order_id}"),
        body,
    }
}

/// The email for a refund of a confirmed order that could not be made.
/// Why it failed is the shop's to look into, not the customer's to read.
pub fn refund_failed(order_id: &str, amount: Option<Money>) -> Draft {
    let mut body = String::from(
        "Hello,\n\nwe could not complete the refund for your order. Nothing is lost: we will be in touch \
         with you about it shortly.\n\n",
    );
    body.push_str(&refund_summary(order_id, amount));
    body.push_str(SIGN_OFF);
    Draft {
        subject: format!("Your refund for order {order_id} could not be completed"),
        body,
    }
}

fn refund_summary(order_id: &str, amount: Option<Money>) -> String {
    match amount {
        Some(amount) => format!("Order: {order_id}\nRefund: {}\n", amount),
        None => format!("Order: {order_id}\n"),
    }
}

const SIGN_OFF: &str = "\nIf you have any questions, just reply to this email.\n\nThe shop team\n";

fn summary(order_id: &str, total: Option<Money>) -> String {
    match total {
        Some(total) => format!("Order: {order_id}\nTotal: {}\n", total),
        None => format!("Order: {order_id}\n"),
    }
}

fn reason_sentence(reason: OrderCancelReason) -> &'static str {
    match reason {
        OrderCancelReason::OutOfStock => "Some of the items were out of stock. Nothing was charged.",
        OrderCancelReason::PaymentDeclined => "The payment was declined. Nothing was charged.",
        OrderCancelReason::ReservationExpired => {
            "The payment did not complete in time, so the items we held for you were released. \
             Any amount already charged will be refunded."
        }
        OrderCancelReason::CustomerCancelled => {
            "It was cancelled at your request. Any amount already charged will be refunded."
        }
        OrderCancelReason::TimedOut => {
            "We could not complete it in time, so the items we held for you were released. \
             Any amount already charged will be refunded."
        }
        OrderCancelReason::PaymentNotAuthenticated => {
            "The payment was not confirmed with your bank in time, so the items we held for you were \
             released. Nothing was charged."
        }
        OrderCancelReason::Unspecified => "Any amount already charged will be refunded.",
    }
}

/// The customer's address. Orders carry only a user id, not an email
/// address, so the address is derived as `<user_id>@<domain>` (a relay for
/// that domain maps it to the real mailbox).
pub fn recipient(user_id: &str, domain: &str) -> Result<Address, String> {
    Address::new(user_id, domain).map_err(|e| format!("user id {user_id:?} cannot form an address at {domain}: {e}"))
}

#[cfg(test)]
mod tests {
    use shop_runtime::values::Currency;

    use super::*;

    fn money(code: &str, minor: i64) -> Money {
        Money::new(Currency::parse(code).expect("valid currency"), minor)
    }

    #[test]
    fn confirmed_email_names_order_and_total() {
        let draft = confirmed("o-1", Some(money("EUR", 2598)));
        assert_eq!(draft.subject, "Order o-1 is confirmed");
        assert!(draft.body.contains("Order: o-1\nTotal: EUR 25.98\n"), "{}", draft.body);
        let without_total = confirmed("o-1", None);
        assert!(!without_total.body.contains("Total"), "{}", without_total.body);
    }

    #[test]
    fn cancelled_email_explains_each_reason() {
        let cases = [
            (OrderCancelReason::OutOfStock, "out of stock"),
            (OrderCancelReason::PaymentDeclined, "payment was declined"),
            (OrderCancelReason::ReservationExpired, "did not complete in time"),
            (OrderCancelReason::CustomerCancelled, "at your request"),
            (OrderCancelReason::TimedOut, "could not complete it in time"),
            (OrderCancelReason::Unspecified, "will be refunded"),
        ];
        for (reason, phrase) in cases {
            let draft = cancelled("o-2", reason, Some(money("EUR", 1299)));
            assert_eq!(draft.subject, "Order o-2 was cancelled");
            assert!(draft.body.contains(phrase), "{reason:?}: {}", draft.body);
            assert!(draft.body.contains("Total: EUR 12.99"), "{reason:?}: {}", draft.body);
        }
    }

    #[test]
    fn a_refund_email_names_what_was_given_back_and_the_order() {
        let draft = refunded("o-3", Some(money("EUR", 1299)));
        assert_eq!(draft.subject, "Your refund for order o-3");
        assert!(draft.body.contains("we have refunded EUR 12.99"), "{}", draft.body);
        assert!(draft.body.contains("Order: o-3\nRefund: EUR 12.99\n"), "{}", draft.body);
        let without_amount = refunded("o-3", None);
        assert!(
            without_amount.body.contains("we have made a refund"),
            "{}",
            without_amount.body
        );
        assert!(!without_amount.body.contains("Refund:"), "{}", without_amount.body);
    }

    #[test]
    fn a_failed_refund_email_says_the_shop_will_be_in_touch() {
        let draft = refund_failed("o-4", Some(money("EUR", 500)));
        assert_eq!(draft.subject, "Your refund for order o-4 could not be completed");
        assert!(draft.body.contains("could not complete the refund"), "{}", draft.body);
        assert!(draft.body.contains("we will be in touch"), "{}", draft.body);
        assert!(draft.body.contains("Order: o-4\nRefund: EUR 5.00\n"), "{}", draft.body);
    }

    #[test]
    fn text_is_ascii_so_it_travels_as_7bit() {
        let drafts = [
            confirmed("o", None),
            cancelled("o", OrderCancelReason::ReservationExpired, None),
            refunded("o", Some(money("EUR", 1))),
            refund_failed("o", None),
        ];
        for draft in drafts {
            assert!(draft.subject.is_ascii() && draft.body.is_ascii(), "{draft:?}");
        }
    }

    #[test]
    fn recipients_are_derived_from_user_ids() {
        assert_eq!(
            recipient("alice", "customers.shop.test")
                .map(|a| a.to_string())
                .as_deref(),
            Ok("alice@customers.shop.test")
        );
        assert!(recipient("a@b", "customers.shop.test").is_err());
        assert!(recipient("alice", "not a domain").is_err());
    }
}
