//! The provider's domain: payment intents, refunds and events as the API
//! shows them, the test cards, and the state machine.
//!
//! ```text
//!                 ┌─ pm_card_ok, pm_card_timeout ──────────────────────▶ succeeded
//! (confirmed) ────┼─ pm_card_declined ─────────────────────────────────▶ requires_payment_method
//!                 ├─ pm_card_3ds ──▶ requires_action ──authenticated──▶ succeeded
//!                 │                         └──────────failed─────────▶ requires_payment_method
//!                 └─ pm_card_async(_declined) ──▶ processing ──settled──▶ succeeded | requires_payment_method
//!   requires_payment_method | requires_action | processing ──cancel──▶ canceled
//! ```
//! A succeeded intent is never canceled (it is refunded instead) and a
//! canceled one never moves again: a settlement or authentication arriving
//! after a cancel changes nothing. Every change of an intent goes through
//! [`confirm`] or [`decide`]; every refund through [`decide_refund`] and
//! [`settle_refund`]. Nothing here does I/O: the journal and the HTTP API
//! are adapters around these functions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The test cards: the payment method decides the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Card {
    /// Succeeds at once.
    #[serde(rename = "pm_card_ok")]
    Ok,
    /// Declined at once (`card_declined`).
    #[serde(rename = "pm_card_declined")]
    Declined,
    /// Succeeds, but the first answer for its idempotency key is lost.
    #[serde(rename = "pm_card_timeout")]
    Timeout,
    /// Needs 3-D Secure: the customer completes or fails it on a page.
    #[serde(rename = "pm_card_3ds")]
    ThreeDs,
    /// `processing`, then succeeds after the async delay.
    #[serde(rename = "pm_card_async")]
    Async,
    /// `processing`, then declined after the async delay.
    #[serde(rename = "pm_card_async_declined")]
    AsyncDeclined,
}

impl Card {
    pub const ALL: [Self; 6] = [
        Self::Ok,
        Self::Declined,
        Self::Timeout,
        Self::ThreeDs,
        Self::Async,
        Self::AsyncDeclined,
    ];

    /// The payment method token, e.g. `pm_card_ok`.
    pub fn token(self) -> &'static str {
        match self {
            Self::Ok => "pm_card_ok",
            Self::Declined => "pm_card_declined",
            Self::Timeout => "pm_card_timeout",
            Self::ThreeDs => "pm_card_3ds",
            Self::Async => "pm_card_async",
            Self::AsyncDeclined => "pm_card_async_declined",
        }
    }

    pub fn parse(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|card| card.token() == token)
    }

    /// How a `processing` intent paid with this card settles.
    pub fn settlement(self) -> Settlement {
        match self {
            Self::AsyncDeclined => Settlement::Declined,
            _ => Settlement::Succeeded,
        }
    }
}

/// A payment intent's status, as Stripe names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Declined or failed authentication: no money moved.
    RequiresPaymentMethod,
    /// Waiting for the customer's 3-D Secure authentication.
    RequiresAction,
    /// Submitted; the outcome comes later.
    Processing,
    /// Captured.
    Succeeded,
    /// Voided before capture.
    Canceled,
}

impl Status {
    pub const ALL: [Self; 5] = [
        Self::RequiresPaymentMethod,
        Self::RequiresAction,
        Self::Processing,
        Self::Succeeded,
        Self::Canceled,
    ];

    /// The event emitted when an intent reaches this status.
    pub fn event(self) -> EventType {
        match self {
            Self::RequiresPaymentMethod => EventType::PaymentIntentPaymentFailed,
            Self::RequiresAction => EventType::PaymentIntentRequiresAction,
            Self::Processing => EventType::PaymentIntentProcessing,
            Self::Succeeded => EventType::PaymentIntentSucceeded,
            Self::Canceled => EventType::PaymentIntentCanceled,
        }
    }
}

/// Why a payment failed, as `last_payment_error` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    CardDeclined,
    AuthenticationFailed,
}

impl Failure {
    pub fn error(self) -> PaymentError {
        let (code, decline_code, message) = match self {
            Self::CardDeclined => ("card_declined", "card_declined", "Your card was declined."),
            Self::AuthenticationFailed => (
                "payment_intent_authentication_failure",
                "authentication_failed",
                "The customer failed 3-D Secure authentication.",
            ),
        };
        PaymentError {
            code: code.to_owned(),
            decline_code: decline_code.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// How a `processing` intent ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Settlement {
    Succeeded,
    Declined,
}

/// What can happen to an intent after it was confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    /// The customer completed (`passed`) or failed 3-D Secure.
    Authenticated { passed: bool },
    /// The async delay of a `processing` intent ran out.
    Settled(Settlement),
    /// `POST /v1/payment_intents/{id}/cancel`.
    Cancel,
}

/// A reason to refuse a call, as the API's error body names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: &'static str,
}

/// What the state machine says about an input in a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The intent moves to `to`, failing for `failure` if any.
    Move { to: Status, failure: Option<Failure> },
    /// Repeated or stale: nothing changes; the intent is answered as it is.
    Ignore,
    /// Not allowed.
    Refuse(Refusal),
}

/// Where a freshly confirmed intent paid with `card` goes.
pub fn confirm(card: Card) -> Decision {
    let (to, failure) = match card {
        Card::Ok | Card::Timeout => (Status::Succeeded, None),
        Card::Declined => (Status::RequiresPaymentMethod, Some(Failure::CardDeclined)),
        Card::ThreeDs => (Status::RequiresAction, None),
        Card::Async | Card::AsyncDeclined => (Status::Processing, None),
    };
    Decision::Move { to, failure }
}

pub const CANNOT_CANCEL_SUCCEEDED: Refusal = Refusal {
    code: "payment_intent_unexpected_state",
    message: "This PaymentIntent has succeeded and cannot be canceled; refund it instead.",
};

pub fn decide(from: Status, input: Input) -> Decision {
    use Decision::{Ignore, Move, Refuse};
    use Status::{Canceled, Processing, RequiresAction, RequiresPaymentMethod, Succeeded};
    match (from, input) {
        (RequiresAction, Input::Authenticated { passed: true }) => Move {
            to: Succeeded,
            failure: None,
        },
        (RequiresAction, Input::Authenticated { passed: false }) => Move {
            to: RequiresPaymentMethod,
            failure: Some(Failure::AuthenticationFailed),
        },
        (Processing, Input::Settled(Settlement::Succeeded)) => Move {
            to: Succeeded,
            failure: None,
        },
        (Processing, Input::Settled(Settlement::Declined)) => Move {
            to: RequiresPaymentMethod,
            failure: Some(Failure::CardDeclined),
        },
        (RequiresPaymentMethod | RequiresAction | Processing, Input::Cancel) => Move {
            to: Canceled,
            failure: None,
        },
        (Canceled, Input::Cancel) => Ignore,
        (Succeeded, Input::Cancel) => Refuse(CANNOT_CANCEL_SUCCEEDED),
        // A second click on the authentication page, or a click after a
        // cancel; a settlement after a cancel, or one replayed after a
        // restart: the intent stays as it is.
        (_, Input::Authenticated { .. } | Input::Settled(_)) => Ignore,
    }
}

/// `last_payment_error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentError {
    pub code: String,
    pub decline_code: String,
    pub message: String,
}

/// `next_action` of an intent waiting for 3-D Secure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextAction {
    /// Always `redirect_to_url`.
    #[serde(rename = "type")]
    pub kind: String,
    pub redirect_to_url: RedirectToUrl,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedirectToUrl {
    /// The authentication page.
    pub url: String,
    /// Where the page sends the customer afterwards.
    pub return_url: Option<String>,
}

/// A payment intent, as the API answers it (less `"object"`, which
/// [`Object`] adds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: Status,
    pub payment_method: Card,
    pub metadata: BTreeMap<String, String>,
    pub last_payment_error: Option<PaymentError>,
    pub next_action: Option<NextAction>,
    /// What was captured: the amount once succeeded, else 0.
    pub amount_received: i64,
    /// Refunds made, pending ones included: what is left to refund is
    /// `amount_received - amount_refunded`.
    pub amount_refunded: i64,
    /// Unix seconds.
    pub created: i64,
    pub return_url: Option<String>,
}

/// A validated `POST /v1/payment_intents` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewIntent {
    pub amount: i64,
    pub currency: String,
    pub payment_method: Card,
    pub metadata: BTreeMap<String, String>,
    pub return_url: Option<String>,
}

impl Intent {
    /// The intent `new` becomes when confirmed: `authenticate_url` is the
    /// 3-D Secure page, should the card need one.
    pub fn open(id: String, created: i64, new: NewIntent, authenticate_url: String) -> Self {
        let intent = Self {
            id,
            amount: new.amount,
            currency: new.currency,
            status: Status::RequiresPaymentMethod,
            payment_method: new.payment_method,
            metadata: new.metadata,
            last_payment_error: None,
            next_action: None,
            amount_received: 0,
            amount_refunded: 0,
            created,
            return_url: new.return_url,
        };
        match confirm(new.payment_method) {
            Decision::Move { to, failure } => {
                let mut opened = intent.moved(to, failure);
                if to == Status::RequiresAction {
                    opened.next_action = Some(NextAction {
                        kind: "redirect_to_url".to_owned(),
                        redirect_to_url: RedirectToUrl {
                            url: authenticate_url,
                            return_url: opened.return_url.clone(),
                        },
                    });
                }
                opened
            }
            Decision::Ignore | Decision::Refuse(_) => intent,
        }
    }

    /// The intent after a move to `to`.
    pub fn moved(&self, to: Status, failure: Option<Failure>) -> Self {
        Self {
            status: to,
            last_payment_error: failure.map(Failure::error),
            next_action: None,
            amount_received: if to == Status::Succeeded { self.amount } else { 0 },
            ..self.clone()
        }
    }

    /// The order this payment is for, as the shop put it in `metadata`.
    pub fn order_id(&self) -> Option<&str> {
        self.metadata.get("order_id").map(String::as_str)
    }

    pub fn refundable(&self) -> i64 {
        self.amount_received - self.amount_refunded
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    /// Never reached by the emulator's refunds; part of the shape.
    Failed,
}

/// A refund, as the API answers it (less `"object"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub payment_intent: String,
    pub amount: i64,
    pub currency: String,
    pub status: RefundStatus,
    pub created: i64,
}

/// A validated `POST /v1/refunds` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewRefund {
    pub payment_intent: String,
    /// The whole remaining amount when absent.
    pub amount: Option<i64>,
}

pub const REFUND_NOT_SUCCEEDED: Refusal = Refusal {
    code: "payment_intent_unexpected_state",
    message: "Only a succeeded PaymentIntent can be refunded.",
};
pub const ALREADY_REFUNDED: Refusal = Refusal {
    code: "charge_already_refunded",
    message: "This PaymentIntent has been refunded in full already.",
};
pub const AMOUNT_TOO_LARGE: Refusal = Refusal {
    code: "amount_too_large",
    message: "The refund amount is greater than what is left to refund.",
};

/// How much a refund of `intent` for `amount` (all that is left when
/// `None`) gives back, or why it cannot be made. `amount` is positive.
pub fn decide_refund(intent: &Intent, amount: Option<i64>) -> Result<i64, Refusal> {
    if intent.status != Status::Succeeded {
        return Err(REFUND_NOT_SUCCEEDED);
    }
    let left = intent.refundable();
    match amount {
        _ if left <= 0 => Err(ALREADY_REFUNDED),
        None => Ok(left),
        Some(amount) if amount > left => Err(AMOUNT_TOO_LARGE),
        Some(amount) => Ok(amount),
    }
}

/// A refund's next status once the bank answered (`failed`: it sent the
/// money back), if it moves.
pub fn settle_refund(status: RefundStatus, failed: bool) -> Option<RefundStatus> {
    match (status, failed) {
        (RefundStatus::Pending, false) => Some(RefundStatus::Succeeded),
        (RefundStatus::Pending, true) => Some(RefundStatus::Failed),
        (RefundStatus::Succeeded | RefundStatus::Failed, _) => None,
    }
}

/// An API object with its `"object"` tag, as answers and events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "object", rename_all = "snake_case")]
pub enum Object {
    PaymentIntent(Intent),
    Refund(Refund),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "payment_intent.succeeded")]
    PaymentIntentSucceeded,
    #[serde(rename = "payment_intent.payment_failed")]
    PaymentIntentPaymentFailed,
    #[serde(rename = "payment_intent.canceled")]
    PaymentIntentCanceled,
    #[serde(rename = "payment_intent.requires_action")]
    PaymentIntentRequiresAction,
    #[serde(rename = "payment_intent.processing")]
    PaymentIntentProcessing,
    #[serde(rename = "refund.created")]
    RefundCreated,
    #[serde(rename = "refund.updated")]
    RefundUpdated,
}

/// Something that happened, with the object as it was then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Unix seconds.
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    pub object: Object,
}

/// One line of `GET /admin/ledger`: where an intent's money is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLine {
    pub intent: String,
    pub order_id: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: Status,
    /// Minor units captured.
    pub captured: i64,
    /// Canceled before capture: nothing was or will be taken.
    pub voided: bool,
    /// Minor units refunded (refunds that succeeded).
    pub refunded: i64,
    /// Minor units in refunds still pending.
    pub refund_pending: i64,
}

/// The ledger line of `intent` with its `refunds`.
pub fn ledger_line<'a>(intent: &Intent, refunds: impl IntoIterator<Item = &'a Refund>) -> LedgerLine {
    let (mut refunded, mut refund_pending) = (0, 0);
    for refund in refunds.into_iter().filter(|r| r.payment_intent == intent.id) {
        match refund.status {
            RefundStatus::Succeeded => refunded += refund.amount,
            RefundStatus::Pending => refund_pending += refund.amount,
            RefundStatus::Failed => {}
        }
    }
    LedgerLine {
        intent: intent.id.clone(),
        order_id: intent.order_id().map(str::to_owned),
        amount: intent.amount,
        currency: intent.currency.clone(),
        status: intent.status,
        captured: intent.amount_received,
        voided: intent.status == Status::Canceled,
        refunded,
        refund_pending,
    }
}

/// A request field that failed validation, named so a client can act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub param: String,
    pub message: String,
}

/// Largest amount in minor units (Stripe's limit for most currencies).
pub const MAX_AMOUNT: i64 = 99_999_999;

/// `POST /v1/payment_intents`, as it arrives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentRequest {
    pub amount: i64,
    pub currency: String,
    pub payment_method: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub return_url: Option<String>,
}

/// `POST /v1/refunds`, as it arrives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    pub payment_intent: String,
    #[serde(default)]
    pub amount: Option<i64>,
}

fn field(param: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        param: param.to_owned(),
        message: message.into(),
    }
}

fn amount_ok(param: &str, amount: i64) -> Result<i64, FieldError> {
    if (1..=MAX_AMOUNT).contains(&amount) {
        Ok(amount)
    } else {
        Err(field(
            param,
            format!("Invalid {param}: must be from 1 to {MAX_AMOUNT} (minor units), got {amount}."),
        ))
    }
}

impl IntentRequest {
    pub fn validate(self) -> Result<NewIntent, FieldError> {
        let amount = amount_ok("amount", self.amount)?;
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(field(
                "currency",
                format!(
                    "Invalid currency {:?}: a three-letter ISO code, e.g. eur.",
                    self.currency
                ),
            ));
        }
        let payment_method = Card::parse(&self.payment_method).ok_or_else(|| {
            let known: Vec<&str> = Card::ALL.iter().map(|c| c.token()).collect();
            field(
                "payment_method",
                format!(
                    "No such payment_method: {:?}; the test cards are {}.",
                    self.payment_method,
                    known.join(", ")
                ),
            )
        })?;
        if self.metadata.len() > 50 {
            return Err(field("metadata", "At most 50 keys."));
        }
        if let Some((key, _)) = self
            .metadata
            .iter()
            .find(|(k, v)| k.is_empty() || k.len() > 40 || v.len() > 500)
        {
            return Err(field(
                &format!("metadata[{key}]"),
                "Keys are 1 to 40 characters, values at most 500.",
            ));
        }
        if let Some(url) = &self.return_url
            && !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return Err(field(
                "return_url",
                format!("Invalid return_url {url:?}: an absolute http(s) URL."),
            ));
        }
        Ok(NewIntent {
            amount,
            currency: self.currency.to_ascii_lowercase(),
            payment_method,
            metadata: self.metadata,
            return_url: self.return_url,
        })
    }
}

impl RefundRequest {
    pub fn validate(self) -> Result<NewRefund, FieldError> {
        if self.payment_intent.is_empty() {
            return Err(field("payment_intent", "Missing payment_intent."));
        }
        let amount = self.amount.map(|a| amount_ok("amount", a)).transpose()?;
        Ok(NewRefund {
            payment_intent: self.payment_intent,
            amount,
        })
    }
}

/// A new id: `prefix_` and a time-ordered UUID without dashes.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_INPUTS: [Input; 5] = [
        Input::Authenticated { passed: true },
        Input::Authenticated { passed: false },
        Input::Settled(Settlement::Succeeded),
        Input::Settled(Settlement::Declined),
        Input::Cancel,
    ];

    fn moves(to: Status, failure: Option<Failure>) -> Decision {
        Decision::Move { to, failure }
    }

    /// Every status × input, spelled out: the table is the specification.
    #[test]
    fn the_whole_table() {
        use Decision::Ignore;
        use Status::*;
        let refuse = Decision::Refuse(CANNOT_CANCEL_SUCCEEDED);
        let expected = |from: Status, input: Input| match (from, input) {
            (RequiresAction, Input::Authenticated { passed: true }) => moves(Succeeded, None),
            (RequiresAction, Input::Authenticated { passed: false }) => {
                moves(RequiresPaymentMethod, Some(Failure::AuthenticationFailed))
            }
            (Processing, Input::Settled(Settlement::Succeeded)) => moves(Succeeded, None),
            (Processing, Input::Settled(Settlement::Declined)) => {
                moves(RequiresPaymentMethod, Some(Failure::CardDeclined))
            }
            (RequiresPaymentMethod | RequiresAction | Processing, Input::Cancel) => moves(Canceled, None),
            (Succeeded, Input::Cancel) => refuse,
            _ => Ignore,
        };
        let mut cells = 0;
        for from in Status::ALL {
            for input in ALL_INPUTS {
                assert_eq!(decide(from, input), expected(from, input), "{from:?} × {input:?}");
                cells += 1;
            }
        }
        assert_eq!(cells, 25);
    }

    #[test]
    fn money_once_taken_or_given_up_stays_so() {
        for input in ALL_INPUTS {
            assert!(
                !matches!(decide(Status::Canceled, input), Decision::Move { .. }),
                "a canceled intent moved on {input:?}"
            );
            assert!(
                !matches!(decide(Status::Succeeded, input), Decision::Move { .. }),
                "a succeeded intent moved on {input:?}"
            );
        }
        // Only a processing intent settles: a late timer after a cancel is void.
        for from in Status::ALL.into_iter().filter(|s| *s != Status::Processing) {
            for settlement in [Settlement::Succeeded, Settlement::Declined] {
                assert_eq!(decide(from, Input::Settled(settlement)), Decision::Ignore, "{from:?}");
            }
        }
    }

    #[test]
    fn each_card_opens_where_its_name_says() {
        let opened = |card| {
            let new = NewIntent {
                amount: 1299,
                currency: "eur".into(),
                payment_method: card,
                metadata: BTreeMap::from([("order_id".into(), "o-1".into())]),
                return_url: Some("https://shop.test/back".into()),
            };
            Intent::open("pi_1".into(), 0, new, "http://p/authenticate/pi_1".into())
        };
        let ok = opened(Card::Ok);
        assert_eq!((ok.status, ok.amount_received), (Status::Succeeded, 1299));
        assert_eq!(opened(Card::Timeout).status, Status::Succeeded);
        let declined = opened(Card::Declined);
        assert_eq!(declined.status, Status::RequiresPaymentMethod);
        assert_eq!(declined.amount_received, 0);
        assert_eq!(
            declined.last_payment_error.map(|e| e.decline_code),
            Some("card_declined".into())
        );
        let three_ds = opened(Card::ThreeDs);
        assert_eq!(three_ds.status, Status::RequiresAction);
        let redirect = three_ds.next_action.clone().expect("a next action").redirect_to_url;
        assert_eq!(redirect.url, "http://p/authenticate/pi_1");
        assert_eq!(redirect.return_url.as_deref(), Some("https://shop.test/back"));
        let failed = three_ds.moved(Status::RequiresPaymentMethod, Some(Failure::AuthenticationFailed));
        assert_eq!(failed.next_action, None, "the action is over");
        assert_eq!(
            failed.last_payment_error.map(|e| e.decline_code),
            Some("authentication_failed".into())
        );
        for card in [Card::Async, Card::AsyncDeclined] {
            assert_eq!(opened(card).status, Status::Processing);
        }
        assert_eq!(Card::Async.settlement(), Settlement::Succeeded);
        assert_eq!(Card::AsyncDeclined.settlement(), Settlement::Declined);
        assert_eq!(ok.order_id(), Some("o-1"));
    }

    #[test]
    fn cards_round_trip_through_their_tokens() {
        for card in Card::ALL {
            assert_eq!(Card::parse(card.token()), Some(card));
            assert_eq!(
                serde_json::to_value(card).expect("serializable"),
                serde_json::json!(card.token())
            );
        }
        assert_eq!(Card::parse("pm_card_visa"), None);
    }

    fn succeeded(amount: i64, refunded: i64) -> Intent {
        Intent {
            id: "pi_1".into(),
            amount,
            currency: "eur".into(),
            status: Status::Succeeded,
            payment_method: Card::Ok,
            metadata: BTreeMap::new(),
            last_payment_error: None,
            next_action: None,
            amount_received: amount,
            amount_refunded: refunded,
            created: 0,
            return_url: None,
        }
    }

    #[test]
    fn refunds_give_back_at_most_what_was_taken() {
        assert_eq!(decide_refund(&succeeded(1000, 0), None), Ok(1000));
        assert_eq!(decide_refund(&succeeded(1000, 300), None), Ok(700));
        assert_eq!(decide_refund(&succeeded(1000, 300), Some(700)), Ok(700));
        assert_eq!(decide_refund(&succeeded(1000, 300), Some(701)), Err(AMOUNT_TOO_LARGE));
        assert_eq!(decide_refund(&succeeded(1000, 1000), None), Err(ALREADY_REFUNDED));
        assert_eq!(decide_refund(&succeeded(1000, 1000), Some(1)), Err(ALREADY_REFUNDED));
        for status in Status::ALL.into_iter().filter(|s| *s != Status::Succeeded) {
            let intent = Intent {
                status,
                ..succeeded(1000, 0)
            };
            assert_eq!(decide_refund(&intent, None), Err(REFUND_NOT_SUCCEEDED), "{status:?}");
        }
        assert_eq!(
            settle_refund(RefundStatus::Pending, false),
            Some(RefundStatus::Succeeded)
        );
        assert_eq!(settle_refund(RefundStatus::Pending, true), Some(RefundStatus::Failed));
        for failed in [false, true] {
            assert_eq!(settle_refund(RefundStatus::Succeeded, failed), None);
            assert_eq!(settle_refund(RefundStatus::Failed, failed), None);
        }
    }

    #[test]
    fn the_ledger_counts_settled_and_pending_refunds_apart() {
        let intent = succeeded(1000, 600);
        let refund = |id: &str, amount, status| Refund {
            id: id.into(),
            payment_intent: "pi_1".into(),
            amount,
            currency: "eur".into(),
            status,
            created: 0,
        };
        let refunds = [
            refund("re_1", 400, RefundStatus::Succeeded),
            refund("re_2", 200, RefundStatus::Pending),
            Refund {
                payment_intent: "pi_other".into(),
                ..refund("re_3", 5, RefundStatus::Succeeded)
            },
        ];
        let line = ledger_line(&intent, &refunds);
        assert_eq!((line.captured, line.refunded, line.refund_pending), (1000, 400, 200));
        assert!(!line.voided);
        let canceled = Intent {
            status: Status::Canceled,
            amount_received: 0,
            amount_refunded: 0,
            ..succeeded(1000, 0)
        };
        let line = ledger_line(&canceled, []);
        assert!(line.voided);
        assert_eq!(line.captured, 0);
    }

    #[test]
    fn validation_names_the_field() {
        let request = |amount, currency: &str, pm: &str, return_url: Option<&str>| IntentRequest {
            amount,
            currency: currency.into(),
            payment_method: pm.into(),
            metadata: BTreeMap::new(),
            return_url: return_url.map(Into::into),
        };
        let param = |r: IntentRequest| r.validate().map(|_| ()).map_err(|e| e.param);
        assert_eq!(param(request(0, "eur", "pm_card_ok", None)), Err("amount".into()));
        assert_eq!(param(request(100, "euro", "pm_card_ok", None)), Err("currency".into()));
        assert_eq!(
            param(request(100, "eur", "pm_card_visa", None)),
            Err("payment_method".into())
        );
        assert_eq!(
            param(request(100, "eur", "pm_card_ok", Some("/relative"))),
            Err("return_url".into())
        );
        let valid = request(100, "EUR", "pm_card_3ds", Some("https://shop.test/r"))
            .validate()
            .expect("valid");
        assert_eq!(valid.currency, "eur");
        let refund = |amount| RefundRequest {
            payment_intent: "pi_1".into(),
            amount,
        };
        assert_eq!(refund(Some(0)).validate().map_err(|e| e.param), Err("amount".into()));
        assert_eq!(refund(None).validate().map(|r| r.amount), Ok(None));
    }

    #[test]
    fn objects_carry_their_tag() {
        let json = serde_json::to_value(Object::PaymentIntent(succeeded(10, 0))).expect("serializable");
        assert_eq!(json["object"], "payment_intent");
        assert_eq!(json["status"], "succeeded");
        assert_eq!(json["payment_method"], "pm_card_ok");
        let back: Object = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, Object::PaymentIntent(succeeded(10, 0)));
    }
}
