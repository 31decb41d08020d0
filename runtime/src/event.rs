//! Events: which proto message travels on which subject, and the
//! CloudEvents-style headers that carry its identity (NATS binding, binary
//! mode: the body is the proto3 JSON of the message).

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use shop_proto::events::v1 as ev;
use uuid::Uuid;

use crate::{
    trace::{self, Carrier},
    values::OrderId,
};

pub const HEADER_ID: &str = "ce-id";
pub const HEADER_TYPE: &str = "ce-type";
pub const HEADER_SOURCE: &str = "ce-source";
pub const HEADER_TIME: &str = "ce-time";
pub const HEADER_SUBJECT: &str = "ce-subject";
pub const HEADER_SPEC_VERSION: &str = "ce-specversion";
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// An event: a proto message with a fixed type name and subject.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Full proto name, sent as `ce-type`.
    const TYPE: &'static str;
    /// Subject without the trailing key, e.g. `orders.placed`.
    const SUBJECT: &'static str;
    /// What the event is about (an order id, a product's SKU): the last
    /// subject token, and `ce-subject`.
    fn key(&self) -> &str;

    fn subject(&self) -> String {
        format!("{}.{}", Self::SUBJECT, self.key())
    }
}

macro_rules! events {
    ($($ty:ident ($key:ident) => $subject:literal),* $(,)?) => {
        $(
            impl Event for ev::$ty {
                const TYPE: &'static str = concat!("shop.events.v1.", stringify!($ty));
                const SUBJECT: &'static str = $subject;
                fn key(&self) -> &str {
                    &self.$key
                }
            }
        )*
        /// `(ce-type, subject prefix)` of every event this build understands.
        pub const KNOWN_EVENTS: &[(&str, &str)] = &[
            $((concat!("shop.events.v1.", stringify!($ty)), $subject)),*
        ];

        /// Decodes `body` as the event named by `event_type` and encodes it
        /// again: the canonical proto3 JSON of the event. `None` for a type
        /// this build does not know.
        pub fn canonical_json(event_type: &str, body: &[u8]) -> Option<Result<serde_json::Value, serde_json::Error>> {
            $(
                if event_type == <ev::$ty as Event>::TYPE {
                    return Some(serde_json::from_slice::<ev::$ty>(body).and_then(serde_json::to_value));
                }
            )*
            None
        }
    };
}

events! {
    OrderPlaced(order_id) => "orders.placed",
    OrderConfirmed(order_id) => "orders.confirmed",
    OrderCancelled(order_id) => "orders.cancelled",
    OrderRefundRequested(order_id) => "orders.refund_requested",
    InventoryReserved(order_id) => "inventory.reserved",
    InventoryRejected(order_id) => "inventory.rejected",
    InventoryCommitted(order_id) => "inventory.committed",
    InventoryReleased(order_id) => "inventory.released",
    PaymentSucceeded(order_id) => "payments.succeeded",
    PaymentFailed(order_id) => "payments.failed",
    PaymentAwaiting(order_id) => "payments.awaiting",
    PaymentRefunded(order_id) => "payments.refunded",
    PaymentRefundFailed(order_id) => "payments.refund_failed",
    ProductChanged(sku) => "catalog.product_changed",
}

/// An event ready for the outbox: identity, subject and encoded body.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    pub event_id: Uuid,
    pub event_type: &'static str,
    pub subject: String,
    pub key: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: Vec<u8>,
}

impl OutgoingEvent {
    pub fn new<E: Event>(event: &E) -> Result<Self, serde_json::Error> {
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_type: E::TYPE,
            subject: event.subject(),
            key: event.key().to_owned(),
            occurred_at: Utc::now(),
            payload: serde_json::to_vec(event)?,
        })
    }
}

/// The headers an event is published with. `Nats-Msg-Id` is the event id,
/// so a retried publish is stored once.
pub fn headers(
    event_id: Uuid,
    event_type: &str,
    source: &str,
    key: &str,
    occurred_at: DateTime<Utc>,
    trace: &Carrier,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, event_id.to_string().as_str());
    headers.insert(HEADER_SPEC_VERSION, "1.0");
    headers.insert(HEADER_ID, event_id.to_string().as_str());
    headers.insert(HEADER_TYPE, event_type);
    headers.insert(HEADER_SOURCE, source);
    headers.insert(HEADER_SUBJECT, key);
    headers.insert(HEADER_TIME, occurred_at.to_rfc3339().as_str());
    headers.insert("content-type", CONTENT_TYPE_JSON);
    if let Some(parent) = &trace.traceparent {
        headers.insert(trace::TRACEPARENT, parent.as_str());
    }
    if let Some(state) = &trace.tracestate {
        headers.insert(trace::TRACESTATE, state.as_str());
    }
    headers
}

/// Why a delivered message is not a usable event.
#[derive(Debug, thiserror::Error)]
pub enum MalformedEvent {
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("header ce-id {0:?} is not a UUID")]
    BadId(String),
    #[error("order_id: {0}")]
    BadOrderId(String),
    #[error("body is not a valid {event_type}: {source}")]
    BadBody {
        event_type: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// An event as delivered by a consumer.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub subject: String,
    pub payload: Bytes,
    /// The span that published it.
    pub trace: Carrier,
}

impl IncomingEvent {
    pub fn from_message(subject: &str, headers: Option<&HeaderMap>, payload: Bytes) -> Result<Self, MalformedEvent> {
        let header = |name: &'static str| headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
        let id = header(HEADER_ID).ok_or(MalformedEvent::MissingHeader(HEADER_ID))?;
        let event_id = Uuid::parse_str(&id).map_err(|_| MalformedEvent::BadId(id))?;
        let event_type = header(HEADER_TYPE).ok_or(MalformedEvent::MissingHeader(HEADER_TYPE))?;
        Ok(Self {
            event_id,
            event_type,
            subject: subject.to_owned(),
            payload,
            trace: Carrier {
                traceparent: header(trace::TRACEPARENT),
                tracestate: header(trace::TRACESTATE),
            },
        })
    }

    pub fn is<E: Event>(&self) -> bool {
        self.event_type == E::TYPE
    }

    pub fn decode<E: Event>(&self) -> Result<E, MalformedEvent> {
        serde_json::from_slice(&self.payload).map_err(|source| MalformedEvent::BadBody {
            event_type: E::TYPE,
            source,
        })
    }
}

/// The order an event is about, as every consumer reads it: one canonical
/// form whatever case it came in, or the event is malformed (and parked).
pub fn order_id(raw: &str) -> Result<OrderId, MalformedEvent> {
    OrderId::parse(raw).map_err(MalformedEvent::BadOrderId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_order_id_reads_in_one_canonical_form_or_parks_the_event() {
        let id = order_id("0190F3C4-2222-7000-8000-00000000000A").expect("an order id in capitals");
        assert_eq!(id.to_string(), "0190f3c4-2222-7000-8000-00000000000a");
        for junk in ["", "o-1", "0190f3c4-2222-7000-8000-00000000000a}:x"] {
            let error = order_id(junk).expect_err(junk);
            let handled = crate::consumer::HandleError::from(error);
            assert!(
                matches!(&handled, crate::consumer::HandleError::Reject(why) if why.starts_with("order_id: ")),
                "{junk:?}: {handled:?}"
            );
        }
    }

    #[test]
    fn subjects_end_with_the_key() {
        let e = ev::OrderPlaced {
            order_id: "o-1".into(),
            ..Default::default()
        };
        assert_eq!(e.subject(), "orders.placed.o-1");
        assert_eq!(<ev::OrderPlaced as Event>::TYPE, "shop.events.v1.OrderPlaced");
    }

    #[test]
    fn headers_round_trip() {
        let id = Uuid::now_v7();
        let h = headers(
            id,
            "shop.events.v1.OrderPlaced",
            "svc-order",
            "o-1",
            Utc::now(),
            &Carrier {
                traceparent: Some("00-abc-def-01".into()),
                tracestate: Some("shop=1".into()),
            },
        );
        assert_eq!(
            h.get(async_nats::header::NATS_MESSAGE_ID).map(|v| v.as_str()),
            Some(id.to_string().as_str())
        );
        let incoming =
            IncomingEvent::from_message("orders.placed.o-1", Some(&h), Bytes::from_static(b"{}")).expect("well-formed");
        assert_eq!(incoming.event_id, id);
        assert!(incoming.is::<ev::OrderPlaced>());
        assert_eq!(incoming.trace.traceparent.as_deref(), Some("00-abc-def-01"));
        assert_eq!(incoming.trace.tracestate.as_deref(), Some("shop=1"));
    }

    #[test]
    fn missing_or_bad_headers_are_malformed() {
        assert!(matches!(
            IncomingEvent::from_message("x", None, Bytes::new()),
            Err(MalformedEvent::MissingHeader(HEADER_ID))
        ));
        let mut h = HeaderMap::new();
        h.insert(HEADER_ID, "not-a-uuid");
        assert!(matches!(
            IncomingEvent::from_message("x", Some(&h), Bytes::new()),
            Err(MalformedEvent::BadId(_))
        ));
    }
}
