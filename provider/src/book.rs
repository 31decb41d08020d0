//! The provider's state in memory: intents, refunds, events, idempotency
//! keys and the webhooks still owed, built only by applying journal
//! [`Record`]s, at start (replay) and after each change alike, so what a
//! restart rebuilds is what was there.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::domain::{Event, Intent, LedgerLine, Refund, ledger_line};

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub(crate) enum Record {
    /// A state change: the intent (and the refund) as they now are, the
    /// event it emitted, and the idempotency key it answered, if it was
    /// the first call under one.
    Changed(Box<Change>),
    /// The event's webhook was answered with a 2xx.
    Delivered { event: String },
    /// The event's webhook was not answered with a 2xx within the horizon.
    GaveUp { event: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Change {
    pub intent: Intent,
    pub refund: Option<Refund>,
    pub event: Event,
    pub key: Option<KeyUse>,
}

/// An idempotency key and the call it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyUse {
    pub key: String,
    /// The call's endpoint and body, canonical: the key answers only the
    /// same call again.
    pub fingerprint: String,
    /// The object the call created.
    pub answer: String,
}

#[derive(Debug, Default)]
pub(crate) struct Book {
    intents: HashMap<String, Intent>,
    /// Intent ids in the order they were created.
    intent_order: Vec<String>,
    refunds: HashMap<String, Refund>,
    refunds_of: HashMap<String, Vec<String>>,
    events: Vec<Event>,
    event_at: HashMap<String, usize>,
    keys: HashMap<String, KeyUse>,
    /// Positions in `events` whose webhook is neither delivered nor given up.
    owed: BTreeSet<usize>,
}

/// `after` names no event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnknownEvent;

impl Book {
    pub(crate) fn replay(records: impl IntoIterator<Item = Record>) -> Self {
        let mut book = Self::default();
        for record in records {
            book.apply(&record);
        }
        book
    }

    pub(crate) fn apply(&mut self, record: &Record) {
        match record {
            Record::Changed(change) => {
                let intent = &change.intent;
                if self.intents.insert(intent.id.clone(), intent.clone()).is_none() {
                    self.intent_order.push(intent.id.clone());
                }
                if let Some(refund) = &change.refund
                    && self.refunds.insert(refund.id.clone(), refund.clone()).is_none()
                {
                    self.refunds_of
                        .entry(refund.payment_intent.clone())
                        .or_default()
                        .push(refund.id.clone());
                }
                if !self.event_at.contains_key(&change.event.id) {
                    self.event_at.insert(change.event.id.clone(), self.events.len());
                    self.owed.insert(self.events.len());
                    self.events.push(change.event.clone());
                }
                if let Some(key) = &change.key {
                    self.keys.entry(key.key.clone()).or_insert_with(|| key.clone());
                }
            }
            Record::Delivered { event } | Record::GaveUp { event } => {
                if let Some(at) = self.event_at.get(event) {
                    self.owed.remove(at);
                }
            }
        }
    }

    pub(crate) fn intent(&self, id: &str) -> Option<&Intent> {
        self.intents.get(id)
    }

    pub(crate) fn refund(&self, id: &str) -> Option<&Refund> {
        self.refunds.get(id)
    }

    pub(crate) fn key(&self, key: &str) -> Option<&KeyUse> {
        self.keys.get(key)
    }

    pub(crate) fn event(&self, id: &str) -> Option<&Event> {
        self.event_at.get(id).map(|at| &self.events[*at])
    }

    /// Up to `limit` events after the one named `after` (from the first
    /// when `None`), in the order they happened, and whether more follow.
    pub(crate) fn events_after(&self, after: Option<&str>, limit: usize) -> Result<(Vec<Event>, bool), UnknownEvent> {
        let start = match after {
            None => 0,
            Some(id) => self.event_at.get(id).ok_or(UnknownEvent)? + 1,
        };
        let rest = self.events.get(start..).unwrap_or_default();
        Ok((rest.iter().take(limit).cloned().collect(), rest.len() > limit))
    }

    pub(crate) fn is_owed(&self, event: &str) -> bool {
        self.event_at.get(event).is_some_and(|at| self.owed.contains(at))
    }

    /// Events whose webhook is still owed, oldest first.
    pub(crate) fn owed(&self) -> impl Iterator<Item = &Event> {
        self.owed.iter().map(|at| &self.events[*at])
    }

    pub(crate) fn intents(&self) -> impl Iterator<Item = &Intent> {
        self.intent_order.iter().filter_map(|id| self.intents.get(id))
    }

    pub(crate) fn refunds(&self) -> impl Iterator<Item = &Refund> {
        self.refunds.values()
    }

    pub(crate) fn ledger(&self) -> Vec<LedgerLine> {
        self.intents()
            .map(|intent| {
                let refunds = self.refunds_of.get(&intent.id).into_iter().flatten();
                ledger_line(intent, refunds.filter_map(|id| self.refunds.get(id)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::{Card, EventData, EventType, NewIntent, Object, RefundStatus, Status};

    fn opened(id: &str, card: Card) -> Intent {
        let new = NewIntent {
            amount: 1000,
            currency: "eur".into(),
            payment_method: card,
            metadata: BTreeMap::from([("order_id".into(), format!("order-{id}"))]),
            return_url: None,
        };
        Intent::open(id.into(), 0, new, String::new())
    }

    fn changed(intent: Intent, refund: Option<Refund>, event: &str, key: Option<&str>) -> Record {
        let (kind, object) = match &refund {
            Some(r) => (EventType::RefundCreated, Object::Refund(r.clone())),
            None => (intent.status.event(), Object::PaymentIntent(intent.clone())),
        };
        Record::Changed(Box::new(Change {
            key: key.map(|k| KeyUse {
                key: k.into(),
                fingerprint: "f".into(),
                answer: intent.id.clone(),
            }),
            intent,
            refund,
            event: Event {
                id: event.into(),
                kind,
                created: 0,
                data: EventData { object },
            },
        }))
    }

    #[test]
    fn replaying_the_records_rebuilds_the_state() {
        let ok = opened("pi_1", Card::Ok);
        let refund = Refund {
            id: "re_1".into(),
            payment_intent: "pi_1".into(),
            amount: 400,
            currency: "eur".into(),
            status: RefundStatus::Pending,
            created: 0,
        };
        let async_card = opened("pi_2", Card::Async);
        let records = [
            changed(ok.clone(), None, "evt_1", Some("k1")),
            changed(async_card.clone(), None, "evt_2", Some("k2")),
            Record::Delivered { event: "evt_1".into() },
            changed(
                Intent {
                    amount_refunded: 400,
                    ..ok.clone()
                },
                Some(refund.clone()),
                "evt_3",
                Some("k3"),
            ),
            changed(async_card.moved(Status::Canceled, None), None, "evt_4", None),
            Record::GaveUp { event: "evt_4".into() },
        ];
        // Through the journal's own encoding.
        let lines: Vec<String> = records
            .iter()
            .map(|r| serde_json::to_string(r).expect("encodable"))
            .collect();
        let book = Book::replay(lines.iter().map(|l| serde_json::from_str(l).expect("decodable")));

        assert_eq!(book.intent("pi_1").map(|i| i.amount_refunded), Some(400));
        assert_eq!(book.intent("pi_2").map(|i| i.status), Some(Status::Canceled));
        assert_eq!(book.refund("re_1"), Some(&refund));
        assert_eq!(book.key("k3").map(|k| k.answer.as_str()), Some("pi_1"));
        let owed: Vec<&str> = book.owed().map(|e| e.id.as_str()).collect();
        assert_eq!(owed, ["evt_2", "evt_3"]);
        let ledger = book.ledger();
        assert_eq!(ledger.len(), 2);
        assert_eq!(ledger[0].order_id.as_deref(), Some("order-pi_1"));
        assert_eq!((ledger[0].captured, ledger[0].refund_pending), (1000, 400));
        assert!(ledger[1].voided);

        let (page, more) = book.events_after(None, 2).expect("from the start");
        assert_eq!(
            page.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["evt_1", "evt_2"]
        );
        assert!(more);
        let (page, more) = book.events_after(Some("evt_2"), 10).expect("after a known event");
        assert_eq!(
            page.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["evt_3", "evt_4"]
        );
        assert!(!more);
        assert_eq!(book.events_after(Some("evt_4"), 10), Ok((vec![], false)));
        assert_eq!(book.events_after(Some("evt_x"), 10), Err(UnknownEvent));
    }

    #[test]
    fn a_key_keeps_its_first_call() {
        let mut book = Book::default();
        book.apply(&changed(opened("pi_1", Card::Ok), None, "evt_1", Some("k")));
        book.apply(&changed(opened("pi_2", Card::Ok), None, "evt_2", Some("k")));
        assert_eq!(book.key("k").map(|k| k.answer.as_str()), Some("pi_1"));
        // A record applied twice counts once.
        book.apply(&changed(opened("pi_1", Card::Ok), None, "evt_1", None));
        assert_eq!(book.intents().count(), 2);
        assert_eq!(book.events_after(None, 10).map(|(e, _)| e.len()), Ok(2));
    }
}
