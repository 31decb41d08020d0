//! svc-notify's part of the checkout saga: `orders.confirmed` and
//! `orders.cancelled` each become one email to the customer (durable
//! `notify-orders`), and so does each refund of a confirmed order, whether
//! `payments.refunded` says it went through or `payments.refund_failed`
//! that it could not be made (durable `notify-payments`). A
//! `payments.refunded` without a refund id gives back a cancelled order's
//! charge, which the cancellation's email already told of: no email.
//!
//! The inbox claim and the notification row are written in one
//! transaction; the email is sent after the commit (see [`crate::delivery`]),
//! so a sender outage never redelivers the event, only delays the email.

use shop_proto::events::v1 as ev;
use shop_runtime::{
    consumer::{EventHandler, HandleError},
    event::{self, IncomingEvent},
    identity::UserId,
    inbox,
    values::Money,
};
use uuid::Uuid;

use crate::{
    compose::{self, Kind},
    delivery::Delivery,
    store::{self, NewNotification},
};

pub const ORDERS_CONSUMER: &str = "notify-orders";
pub const PAYMENTS_CONSUMER: &str = "notify-payments";

pub struct NotifySaga {
    pub delivery: Delivery,
    /// Domain of the derived recipient addresses (`NOTIFY_RECIPIENT_DOMAIN`).
    pub recipient_domain: String,
    /// The durable consumer this instance serves (the inbox is per consumer).
    pub consumer: &'static str,
}

impl EventHandler for NotifySaga {
    async fn handle(&self, event: IncomingEvent) -> Result<(), HandleError> {
        let Some(notification) = notification_for(&event, &self.recipient_domain)? else {
            return Ok(());
        };
        let mut tx = self.delivery.pool.begin().await?;
        if !inbox::claim(&mut tx, self.consumer, &event).await? {
            return Ok(());
        }
        let inserted = store::insert(&mut tx, &notification, self.delivery.resend_interval).await?;
        tx.commit().await?;
        if !inserted {
            // The same event under another event id: emailed already.
            tracing::info!(
                order_id = %notification.order_id,
                kind = notification.kind.as_str(),
                refund_id = %notification.refund_id,
                "event seen before under another event id; no second email"
            );
            return Ok(());
        }
        // The event is handled once the row is committed; a failure here is
        // the resend loop's to retry, not a reason to redeliver the event.
        if let Err(e) = self.delivery.deliver(notification.notification_id).await {
            tracing::warn!(
                notification_id = %notification.notification_id,
                error = %e,
                "immediate send failed; the resend loop will retry"
            );
        }
        Ok(())
    }
}

/// The notification an event asks for, if any. Events that can never make
/// a valid email (bad order or user id, bad currency, a failed refund
/// without its id) are rejected to the DLQ.
pub fn notification_for(event: &IncomingEvent, recipient_domain: &str) -> Result<Option<NewNotification>, HandleError> {
    let mut refund_id = String::new();
    let (kind, order_id, user_id, draft) = if event.is::<ev::OrderConfirmed>() {
        let e: ev::OrderConfirmed = event.decode()?;
        let order_id = event::order_id(&e.order_id)?.to_string();
        let draft = compose::confirmed(&order_id, money("total", e.total.as_ref())?);
        (Kind::OrderConfirmed, order_id, e.user_id, draft)
    } else if event.is::<ev::OrderCancelled>() {
        let e: ev::OrderCancelled = event.decode()?;
        let order_id = event::order_id(&e.order_id)?.to_string();
        // No reason (or one this build cannot name) still gets an email,
        // with the generic sentence.
        let reason = ev::OrderCancelReason::try_from(e.reason).unwrap_or(ev::OrderCancelReason::Unspecified);
        let draft = compose::cancelled(&order_id, reason, money("total", e.total.as_ref())?);
        (Kind::OrderCancelled, order_id, e.user_id, draft)
    } else if event.is::<ev::PaymentRefunded>() {
        let e: ev::PaymentRefunded = event.decode()?;
        let order_id = event::order_id(&e.order_id)?.to_string();
        if e.refund_id.is_empty() {
            // A cancelled order's charge given back: its cancellation's
            // email said so.
            return Ok(None);
        }
        let draft = compose::refunded(&order_id, money("amount", e.amount.as_ref())?);
        refund_id = e.refund_id;
        (Kind::RefundSucceeded, order_id, e.user_id, draft)
    } else if event.is::<ev::PaymentRefundFailed>() {
        let e: ev::PaymentRefundFailed = event.decode()?;
        let order_id = event::order_id(&e.order_id)?.to_string();
        if e.refund_id.is_empty() {
            return Err(HandleError::Reject(format!(
                "a failed refund of order {order_id} has no refund_id"
            )));
        }
        // e.reason is the provider's, for the shop: never in the email.
        let draft = compose::refund_failed(&order_id, money("amount", e.amount.as_ref())?);
        refund_id = e.refund_id;
        (Kind::RefundFailed, order_id, e.user_id, draft)
    } else {
        return Err(HandleError::unknown_type(event));
    };
    let user_id = UserId::parse(&user_id).map_err(|why| HandleError::Reject(format!("user_id {why}")))?;
    let recipient = compose::recipient(user_id.as_str(), recipient_domain).map_err(HandleError::Reject)?;
    Ok(Some(NewNotification {
        notification_id: Uuid::now_v7(),
        order_id,
        user_id: user_id.as_str().to_owned(),
        kind,
        refund_id,
        recipient: recipient.to_string(),
        subject: draft.subject,
        body: draft.body,
    }))
}

fn money(field: &str, value: Option<&shop_proto::common::v1::Money>) -> Result<Option<Money>, HandleError> {
    value
        .map(Money::from_proto)
        .transpose()
        .map_err(|why| HandleError::Reject(format!("{field}: {why}")))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shop_runtime::event::{self, Event};

    use super::*;

    const ORDER: &str = "0190f3c4-2222-7000-8000-00000000000a";

    fn incoming<E: Event>(e: &E) -> IncomingEvent {
        let payload = serde_json::to_vec(e).expect("encodes");
        incoming_raw(E::TYPE, payload)
    }

    fn incoming_raw(event_type: &str, payload: Vec<u8>) -> IncomingEvent {
        let headers = event::headers(
            Uuid::now_v7(),
            event_type,
            "svc-order",
            ORDER,
            chrono::Utc::now(),
            &Default::default(),
        );
        IncomingEvent::from_message(&format!("orders.x.{ORDER}"), Some(&headers), Bytes::from(payload))
            .expect("well-formed headers")
    }

    fn eur(minor: i64) -> Option<shop_proto::common::v1::Money> {
        Some(shop_proto::common::v1::Money {
            currency_code: "EUR".into(),
            amount_minor: minor,
        })
    }

    /// The email `event` asks for, which it must.
    fn email(event: &IncomingEvent) -> NewNotification {
        notification_for(event, "customers.shop.test")
            .expect("valid")
            .expect("an email")
    }

    #[test]
    fn confirmed_orders_get_a_confirmation() {
        let e = ev::OrderConfirmed {
            order_id: ORDER.to_uppercase(),
            user_id: "alice".into(),
            total: eur(2598),
            confirmed_at: None,
        };
        let n = email(&incoming(&e));
        assert_eq!(n.kind, Kind::OrderConfirmed);
        assert_eq!(n.refund_id, "");
        assert_eq!(n.order_id, ORDER, "order ids are stored in canonical form");
        assert_eq!(n.user_id, "alice");
        assert_eq!(n.recipient, "alice@customers.shop.test");
        assert!(n.body.contains("EUR 25.98"), "{}", n.body);
    }

    #[test]
    fn cancelled_orders_say_why() {
        let e = ev::OrderCancelled {
            order_id: ORDER.into(),
            user_id: "bob".into(),
            reason: ev::OrderCancelReason::OutOfStock as i32,
            total: eur(100),
            cancelled_at: None,
        };
        let n = email(&incoming(&e));
        assert_eq!(n.kind, Kind::OrderCancelled);
        assert!(n.body.contains("out of stock"), "{}", n.body);
        let no_reason = ev::OrderCancelled {
            reason: ev::OrderCancelReason::Unspecified as i32,
            ..e
        };
        let n = email(&incoming(&no_reason));
        assert!(n.body.contains("will be refunded"), "{}", n.body);
    }

    #[test]
    fn each_refund_of_a_confirmed_order_gets_its_email_and_a_cancellations_refund_none() {
        let refunded = ev::PaymentRefunded {
            order_id: ORDER.into(),
            user_id: "carol".into(),
            payment_id: "p-1".into(),
            amount: eur(1299),
            refund_id: "r-1".into(),
        };
        let n = email(&incoming(&refunded));
        assert_eq!(n.kind, Kind::RefundSucceeded);
        assert_eq!((n.order_id.as_str(), n.refund_id.as_str()), (ORDER, "r-1"));
        assert_eq!(n.recipient, "carol@customers.shop.test");
        assert_eq!(n.subject, format!("Your refund for order {ORDER}"));
        assert!(n.body.contains("we have refunded EUR 12.99"), "{}", n.body);

        let of_a_cancellation = ev::PaymentRefunded {
            refund_id: String::new(),
            ..refunded
        };
        let none = notification_for(&incoming(&of_a_cancellation), "customers.shop.test").expect("valid");
        assert_eq!(none, None, "the cancellation's email told of it");

        let failed = ev::PaymentRefundFailed {
            order_id: ORDER.into(),
            user_id: "carol".into(),
            payment_id: "p-1".into(),
            refund_id: "r-2".into(),
            amount: eur(500),
            reason: "provider said: charge_already_disputed (acct_1234)".into(),
        };
        let n = email(&incoming(&failed));
        assert_eq!(n.kind, Kind::RefundFailed);
        assert_eq!(n.refund_id, "r-2");
        assert!(n.body.contains("could not complete the refund"), "{}", n.body);
        assert!(n.body.contains("will be in touch"), "{}", n.body);
        for internal in ["provider", "disputed", "acct_1234"] {
            assert!(
                !n.body.contains(internal) && !n.subject.contains(internal),
                "{}",
                n.body
            );
        }
    }

    #[test]
    fn events_that_cannot_make_an_email_are_rejected() {
        let reject = |event: IncomingEvent| {
            matches!(
                notification_for(&event, "customers.shop.test"),
                Err(HandleError::Reject(_))
            )
        };
        let good = ev::OrderConfirmed {
            order_id: ORDER.into(),
            user_id: "alice".into(),
            total: eur(1),
            confirmed_at: None,
        };
        assert!(reject(incoming_raw(
            <ev::OrderConfirmed as Event>::TYPE,
            b"not json".to_vec()
        )));
        assert!(reject(incoming(&ev::OrderConfirmed {
            order_id: "o-1".into(),
            ..good.clone()
        })));
        assert!(reject(incoming(&ev::OrderConfirmed {
            user_id: String::new(),
            ..good.clone()
        })));
        assert!(reject(incoming(&ev::OrderConfirmed {
            user_id: "a@b".into(),
            ..good.clone()
        })));
        let bad_currency = Some(shop_proto::common::v1::Money {
            currency_code: "euro".into(),
            amount_minor: 1,
        });
        assert!(reject(incoming(&ev::OrderConfirmed {
            total: bad_currency,
            ..good
        })));
        assert!(reject(incoming(&ev::OrderPlaced {
            order_id: ORDER.into(),
            ..Default::default()
        })));
        let refunded = ev::PaymentRefunded {
            order_id: ORDER.into(),
            user_id: "alice".into(),
            amount: eur(1),
            refund_id: "r-1".into(),
            ..Default::default()
        };
        assert!(reject(incoming(&ev::PaymentRefunded {
            order_id: "o-1".into(),
            ..refunded.clone()
        })));
        assert!(reject(incoming(&ev::PaymentRefunded {
            amount: Some(shop_proto::common::v1::Money {
                currency_code: "euro".into(),
                amount_minor: 1,
            }),
            ..refunded
        })));
        assert!(reject(incoming(&ev::PaymentRefundFailed {
            order_id: ORDER.into(),
            user_id: "alice".into(),
            ..Default::default()
        })));
    }
}
