//! [`HttpProvider`]: the provider interface over a Stripe-shaped JSON HTTP
//! API, the `shop-provider` emulator's (see its README).
//!
//! - A charge is a payment intent created under the payment's id as its
//!   `Idempotency-Key`, with the order and the payment id in its metadata:
//!   `succeeded` is a success (the intent is the charge), `requires_payment_method`
//!   a decline. `processing` and `requires_action` are not settled yet: the
//!   intent is read again until the call's deadline, then the call counts as
//!   timed out, which the saga already handles (it retries with the same
//!   key, so the same intent, and voids once its attempts are spent).
//! - Only a failure that provably sent nothing is
//!   [`ProviderError::Unavailable`]: no connection made, or the provider's
//!   refusal before acting (a 4xx, a 503). Every other failure may have
//!   acted, and is [`ProviderError::Timeout`]: no answer in time, the
//!   connection dropped after the request went out, any other 5xx.
//! - A void finds the intent made under the key (from an answer this
//!   process had, else from the provider's event list, where its metadata
//!   names the key: a lost answer leaves nothing else to find it by); one
//!   not captured is cancelled, a captured one refunded under
//!   `refund-<key>`, one cancelled or refunded already needs nothing.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use reqwest::{RequestBuilder, StatusCode, Url};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use shop_runtime::values::Money;
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    ChargeOutcome, EventPage, PaymentProvider, ProviderError, ProviderEvent, ProviderRecords, ProviderRefunds, Reading,
    RefundReading,
};
use crate::{
    domain::{Standing, Wait},
    refunds,
};

/// The metadata key of the payment's id (its idempotency key), by which a
/// void finds an intent whose creation it never heard the answer of.
const PAYMENT_ID: &str = "payment_id";

/// Events per page when looking for an intent (the API's most).
const EVENTS_PAGE: &str = "100";

#[derive(Debug, thiserror::Error)]
pub enum HttpProviderError {
    #[error("the payment provider's URL {0} is not an http(s) URL")]
    NotHttp(Url),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A [`PaymentProvider`] over HTTP. Every call is bounded by the deadline
/// it is given (`PAYMENT_PROVIDER_TIMEOUT`), requests and polls included.
pub struct HttpProvider {
    base: Url,
    client: reqwest::Client,
    timeout: Duration,
    /// Payment id → the intent made under it, as answers and the event
    /// list told.
    known: Mutex<HashMap<Uuid, String>>,
    /// The last event read from the provider's list: the next look reads
    /// only what came after. Held while reading, one reader at a time.
    read_up_to: tokio::sync::Mutex<Option<String>>,
    /// Keys a void found no intent under, and when it first did.
    unseen: Mutex<HashMap<Uuid, Instant>>,
    /// Where the provider sends a customer back after authenticating, with
    /// `{order_id}` for the order ([`Self::with_return_url`]).
    return_url: Option<String>,
}

impl std::fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProvider")
            .field("base", &self.base.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpProvider {
    /// The provider at `base` (e.g. `http://127.0.0.1:12111`), each call
    /// given `timeout`.
    pub fn new(base: Url, timeout: Duration) -> Result<Self, HttpProviderError> {
        if !matches!(base.scheme(), "http" | "https") {
            return Err(HttpProviderError::NotHttp(base));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // Shorter than the call, so an unreachable provider shows as
            // such (nothing sent) rather than as a call that timed out.
            .connect_timeout(timeout / 2)
            // A redirected POST would not be the request the key was
            // given for.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(HttpProviderError::Client)?;
        Ok(Self {
            base,
            client,
            timeout,
            known: Mutex::default(),
            read_up_to: tokio::sync::Mutex::default(),
            unseen: Mutex::default(),
            return_url: None,
        })
    }

    /// Sends customers back to `template` after they authenticated a
    /// charge, `{order_id}` replaced by the order's id (e.g. the
    /// storefront's `http://127.0.0.1:8080/#/orders/{order_id}`).
    pub fn with_return_url(self, template: Option<String>) -> Self {
        Self {
            return_url: template,
            ..self
        }
    }

    /// The API's `segments` under the base URL.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn intent_url(&self, id: &str) -> Url {
        self.url(&["v1", "payment_intents", id])
    }

    fn known(&self) -> MutexGuard<'_, HashMap<Uuid, String>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unseen(&self) -> MutexGuard<'_, HashMap<Uuid, Instant>> {
        self.unseen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` with what is left of `deadline`: the object asked
    /// for, or the provider's refusal.
    async fn call<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        deadline: Instant,
    ) -> Result<Reply<T>, ProviderError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProviderError::Timeout);
        }
        let response = request.timeout(left).send().await.map_err(unanswered)?;
        let status = response.status();
        if status.is_success() {
            return response.json().await.map(Reply::Object).map_err(|e| {
                // An answer cut short or not understood: it may have acted.
                tracing::warn!(error = %chain(&e), "the payment provider's answer cannot be read");
                ProviderError::Timeout
            });
        }
        let error = match response.json::<ErrorBody>().await {
            Ok(body) => body.error,
            Err(_) => ApiError::default(),
        };
        Ok(Reply::Refused(Refusal { status, error }))
    }

    async fn read_intent(&self, id: &str, deadline: Instant) -> Result<Intent, ProviderError> {
        match self.call(self.client.get(self.intent_url(id)), deadline).await? {
            Reply::Object(intent) => Ok(intent),
            Reply::Refused(refusal) => Err(refusal.error()),
        }
    }

    fn learn(&self, key: Uuid, intent: &str) {
        self.known().insert(key, intent.to_owned());
    }

    /// The intent made under `key`, if the provider has one.
    async fn find(&self, key: Uuid, deadline: Instant) -> Result<Option<String>, ProviderError> {
        if let Some(id) = self.known().get(&key) {
            return Ok(Some(id.clone()));
        }
        let mut read_up_to = self.read_up_to.lock().await;
        // Read by another call while this one waited?
        if let Some(id) = self.known().get(&key) {
            return Ok(Some(id.clone()));
        }
        loop {
            let mut url = self.url(&["v1", "events"]);
            url.query_pairs_mut().append_pair("limit", EVENTS_PAGE);
            if let Some(after) = read_up_to.as_deref() {
                url.query_pairs_mut().append_pair("after", after);
            }
            let page: EventList = match self.call(self.client.get(url), deadline).await? {
                Reply::Object(page) => page,
                Reply::Refused(refusal) if read_up_to.is_some() && refusal.error.param.as_deref() == Some("after") => {
                    // The provider no longer has the event read up to: it
                    // started afresh, and what it held before is gone.
                    tracing::warn!("the payment provider lost its events; reading them again from the first");
                    *read_up_to = None;
                    self.known().clear();
                    continue;
                }
                Reply::Refused(refusal) => return Err(refusal.error()),
            };
            // Recorded page by page, so a look cut short by its deadline
            // leaves the next one less to read.
            for event in &page.data {
                let seen = &event.data.object;
                if seen.object == "payment_intent"
                    && let Some(key) = seen.metadata.get(PAYMENT_ID).and_then(|k| k.parse().ok())
                {
                    self.learn(key, &seen.id);
                }
            }
            if let Some(last) = page.data.last() {
                *read_up_to = Some(last.id.clone());
            }
            if !page.has_more || page.data.is_empty() {
                return Ok(self.known().get(&key).cloned());
            }
        }
    }

    /// No intent under `key`: is the void done? A voiding payment is never
    /// charged again (`domain::decide`, checked by the saga model's
    /// "charging again after a void" mutation), so only a charge already in
    /// flight when the payment turned voiding could still make one, and
    /// such a call ends within its deadline. Nothing found is trusted once
    /// two deadlines have passed since a void first found nothing; until
    /// then the void is unsettled (a timeout: the saga retries it).
    fn nothing_under(&self, key: Uuid) -> Result<(), ProviderError> {
        let now = Instant::now();
        let mut unseen = self.unseen();
        let since = *unseen.entry(key).or_insert(now);
        if now.duration_since(since) >= self.timeout * 2 {
            unseen.remove(&key);
            return Ok(());
        }
        tracing::info!(payment_id = %key, "no payment intent under this key yet; waiting out any charge in flight");
        Err(ProviderError::Timeout)
    }

    /// Cancels intent `id`; `false` if it cannot be, having succeeded
    /// meanwhile (it is refunded instead).
    async fn cancel(&self, id: &str, deadline: Instant) -> Result<bool, ProviderError> {
        let request = self.client.post(self.url(&["v1", "payment_intents", id, "cancel"]));
        match self.call::<Intent>(request, deadline).await? {
            Reply::Object(intent) => Ok(intent.status == IntentStatus::Canceled),
            Reply::Refused(refusal) if refusal.error.code == "payment_intent_unexpected_state" => Ok(false),
            Reply::Refused(refusal) => Err(refusal.error()),
        }
    }

    /// Refunds what is left of intent `id`, once per payment `key`.
    async fn refund(&self, key: Uuid, id: &str, deadline: Instant) -> Result<(), ProviderError> {
        let request = self
            .client
            .post(self.url(&["v1", "refunds"]))
            .header("Idempotency-Key", format!("refund-{key}"))
            .json(&NewRefund {
                payment_intent: id,
                amount: None,
            });
        match self.call::<Refund>(request, deadline).await? {
            // Pending is on its way back; the provider settles it.
            Reply::Object(refund) if refund.status != "failed" => Ok(()),
            Reply::Object(refund) => Err(ProviderError::Unavailable(format!("refund {} failed", refund.id))),
            Reply::Refused(refusal) if refusal.error.code == "charge_already_refunded" => Ok(()),
            Reply::Refused(refusal) => Err(refusal.error()),
        }
    }
}

impl PaymentProvider for HttpProvider {
    async fn charge(
        &self,
        key: Uuid,
        order_id: &str,
        amount: Money,
        method: &str,
    ) -> Result<ChargeOutcome, ProviderError> {
        let deadline = Instant::now() + self.timeout;
        let body = NewIntent {
            amount: amount.minor,
            currency: amount.currency.as_str().to_ascii_lowercase(),
            payment_method: method,
            metadata: Metadata {
                order_id,
                payment_id: key.to_string(),
            },
            return_url: self.return_url.as_ref().map(|t| t.replace("{order_id}", order_id)),
        };
        let request = self
            .client
            .post(self.url(&["v1", "payment_intents"]))
            .header("Idempotency-Key", key.to_string())
            .json(&body);
        let intent: Intent = match self.call(request, deadline).await? {
            Reply::Object(intent) => intent,
            Reply::Refused(refusal) if refusal.declines() => {
                tracing::info!(payment_id = %key, refusal = %refusal, "the payment provider refused the charge");
                return Ok(ChargeOutcome::Declined {
                    reason: refusal.reason(),
                });
            }
            Reply::Refused(refusal) => {
                tracing::warn!(payment_id = %key, refusal = %refusal, "charge not made");
                return Err(refusal.error());
            }
        };
        self.learn(key, &intent.id);
        match intent.status {
            IntentStatus::Succeeded => Ok(ChargeOutcome::Succeeded { charge_id: intent.id }),
            IntentStatus::RequiresPaymentMethod => Ok(ChargeOutcome::Declined {
                reason: intent.decline_reason(),
            }),
            // Voided meanwhile: nothing was taken.
            IntentStatus::Canceled => Ok(ChargeOutcome::Declined {
                reason: "canceled".into(),
            }),
            IntentStatus::Processing => Ok(ChargeOutcome::Awaiting {
                charge_id: intent.id,
                next_action_url: None,
            }),
            IntentStatus::RequiresAction => match intent.action_url() {
                Some(url) => Ok(ChargeOutcome::Awaiting {
                    charge_id: intent.id.clone(),
                    next_action_url: Some(url.to_owned()),
                }),
                None => {
                    tracing::warn!(payment_id = %key, intent = %intent.id, "an intent requires action but names no page for it");
                    Err(ProviderError::Timeout)
                }
            },
            // A status this client does not know: unsettled as far as it
            // can tell, which a timeout already means.
            IntentStatus::Other => Err(ProviderError::Timeout),
        }
    }

    async fn refund_or_void(&self, key: Uuid) -> Result<(), ProviderError> {
        let deadline = Instant::now() + self.timeout;
        let Some(id) = self.find(key, deadline).await? else {
            return self.nothing_under(key);
        };
        self.unseen().remove(&key);
        // A `processing` intent may succeed between the read and the
        // cancel: then it is read again, and refunded.
        for _ in 0..3 {
            let intent = self.read_intent(&id, deadline).await?;
            match intent.status {
                IntentStatus::Canceled => return Ok(()),
                IntentStatus::Succeeded if intent.amount_refunded >= intent.amount_received => return Ok(()),
                IntentStatus::Succeeded => return self.refund(key, &id, deadline).await,
                IntentStatus::RequiresPaymentMethod | IntentStatus::RequiresAction | IntentStatus::Processing => {
                    if self.cancel(&id, deadline).await? {
                        return Ok(());
                    }
                }
                IntentStatus::Other => break,
            }
        }
        Err(ProviderError::Timeout)
    }
}

impl ProviderRecords for HttpProvider {
    async fn read(&self, charge_id: &str) -> Result<Option<Reading>, ProviderError> {
        let deadline = Instant::now() + self.timeout;
        let intent: Intent = match self.call(self.client.get(self.intent_url(charge_id)), deadline).await? {
            Reply::Object(intent) => intent,
            Reply::Refused(refusal) if refusal.status == StatusCode::NOT_FOUND => return Ok(None),
            Reply::Refused(refusal) => return Err(refusal.error()),
        };
        let standing = match intent.status {
            IntentStatus::Succeeded if intent.amount_received > intent.amount_refunded => Standing::Captured,
            // Refunded in full (refunds still pending count: they are on
            // their way back).
            IntentStatus::Succeeded | IntentStatus::RequiresPaymentMethod | IntentStatus::Canceled => {
                Standing::NothingHeld
            }
            IntentStatus::Processing => Standing::Awaiting(Wait::Processing),
            IntentStatus::RequiresAction if intent.action_url().is_some() => Standing::Awaiting(Wait::CustomerAction),
            IntentStatus::RequiresAction | IntentStatus::Other => {
                tracing::warn!(intent = %intent.id, status = ?intent.status, "an intent in a state this client cannot act on");
                return Err(ProviderError::Timeout);
            }
        };
        let payment_id = intent.metadata.get(PAYMENT_ID).and_then(|id| id.parse().ok());
        if let Some(key) = payment_id {
            self.learn(key, &intent.id);
        }
        Ok(Some(Reading {
            declined: (intent.status == IntentStatus::RequiresPaymentMethod).then(|| intent.decline_reason()),
            next_action_url: intent.action_url().map(str::to_owned),
            charge_id: intent.id,
            payment_id,
            standing,
        }))
    }

    async fn events_after(&self, after: Option<&str>) -> Result<EventPage, ProviderError> {
        let deadline = Instant::now() + self.timeout;
        let mut url = self.url(&["v1", "events"]);
        url.query_pairs_mut().append_pair("limit", EVENTS_PAGE);
        if let Some(after) = after {
            url.query_pairs_mut().append_pair("after", after);
        }
        let page: EventList = match self.call(self.client.get(url), deadline).await? {
            Reply::Object(page) => page,
            Reply::Refused(refusal) if after.is_some() && refusal.error.param.as_deref() == Some("after") => {
                return Ok(EventPage {
                    cursor_lost: true,
                    ..EventPage::default()
                });
            }
            Reply::Refused(refusal) => return Err(refusal.error()),
        };
        let events = page
            .data
            .into_iter()
            .map(|event| {
                let seen = event.data.object;
                let charge_id = match seen.object.as_str() {
                    "payment_intent" => Some(seen.id),
                    "refund" => seen.payment_intent,
                    _ => None,
                };
                ProviderEvent {
                    id: event.id,
                    charge_id,
                }
            })
            .collect();
        Ok(EventPage {
            events,
            has_more: page.has_more,
            cursor_lost: false,
        })
    }
}

impl ProviderRefunds for HttpProvider {
    async fn refund(&self, key: &str, charge_id: &str, amount_minor: i64) -> Result<RefundReading, ProviderError> {
        let deadline = Instant::now() + self.timeout;
        let request = self
            .client
            .post(self.url(&["v1", "refunds"]))
            .header("Idempotency-Key", key)
            .json(&NewRefund {
                payment_intent: charge_id,
                amount: Some(amount_minor),
            });
        match self.call::<Refund>(request, deadline).await? {
            Reply::Object(refund) => Ok(refund.reading()),
            // Refused for good (more than is left, an intent not
            // captured): this attempt made nothing.
            Reply::Refused(refusal) if refusal.status == StatusCode::BAD_REQUEST => {
                tracing::warn!(key, refusal = %refusal, "the provider refused a refund");
                Ok(RefundReading {
                    refund_id: None,
                    state: refunds::Answer::Failed,
                    reason: Some(refusal.reason()),
                })
            }
            Reply::Refused(refusal) => Err(refusal.error()),
        }
    }

    async fn read_refund(&self, refund_id: &str) -> Result<Option<RefundReading>, ProviderError> {
        let deadline = Instant::now() + self.timeout;
        let url = self.url(&["v1", "refunds", refund_id]);
        match self.call::<Refund>(self.client.get(url), deadline).await? {
            Reply::Object(refund) => Ok(Some(refund.reading())),
            Reply::Refused(refusal) if refusal.status == StatusCode::NOT_FOUND => Ok(None),
            Reply::Refused(refusal) => Err(refusal.error()),
        }
    }
}

/// A call that got no status: only a connection never made provably
/// carried nothing.
fn unanswered(e: reqwest::Error) -> ProviderError {
    if e.is_connect() || e.is_builder() {
        ProviderError::Unavailable(chain(&e))
    } else {
        tracing::warn!(error = %chain(&e), "the payment provider did not answer");
        ProviderError::Timeout
    }
}

/// `e` and its sources, as one line (reqwest's own message leaves out the
/// cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

enum Reply<T> {
    Object(T),
    Refused(Refusal),
}

/// An answer other than 2xx.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: ApiError,
}

impl Refusal {
    /// A charge the provider refused for good (a card or a request it
    /// will not take): no money moved, and asking again changes nothing.
    fn declines(&self) -> bool {
        matches!(self.status, StatusCode::BAD_REQUEST | StatusCode::PAYMENT_REQUIRED)
    }

    fn reason(&self) -> String {
        let error = &self.error;
        let code = error.decline_code.as_deref().unwrap_or(&error.code);
        match &error.param {
            Some(param) => format!("{code} ({param})"),
            None => code.to_owned(),
        }
    }

    /// What the refusal means for a call that was not to be refused.
    fn error(self) -> ProviderError {
        match self.status {
            // The key was used for another request: that one may have acted.
            StatusCode::CONFLICT => ProviderError::Timeout,
            // Refused before acting: a request it does not take, too many,
            // an outage.
            status if status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE => {
                ProviderError::Unavailable(self.to_string())
            }
            // Any other 5xx (or a status outside the API) may have acted.
            _ => ProviderError::Timeout,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.error.code,
            self.error.message
        )
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ApiError,
}

/// The API's `error` object.
#[derive(Debug, Default, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    param: Option<String>,
}

#[derive(Serialize)]
struct NewIntent<'a> {
    amount: i64,
    currency: String,
    payment_method: &'a str,
    metadata: Metadata<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    return_url: Option<String>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    order_id: &'a str,
    payment_id: String,
}

#[derive(Serialize)]
struct NewRefund<'a> {
    payment_intent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Intent {
    id: String,
    status: IntentStatus,
    #[serde(default)]
    last_payment_error: Option<PaymentError>,
    #[serde(default)]
    amount_received: i64,
    #[serde(default)]
    amount_refunded: i64,
    #[serde(default)]
    next_action: Option<NextAction>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct NextAction {
    #[serde(default)]
    redirect_to_url: Option<RedirectToUrl>,
}

#[derive(Debug, Deserialize)]
struct RedirectToUrl {
    url: String,
}

impl Intent {
    fn action_url(&self) -> Option<&str> {
        Some(self.next_action.as_ref()?.redirect_to_url.as_ref()?.url.as_str())
    }

    fn decline_reason(&self) -> String {
        self.last_payment_error
            .as_ref()
            .and_then(|e| {
                [&e.decline_code, &e.code, &e.message]
                    .into_iter()
                    .flatten()
                    .find(|s| !s.is_empty())
            })
            .cloned()
            .unwrap_or_else(|| "declined".into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum IntentStatus {
    RequiresPaymentMethod,
    RequiresAction,
    Processing,
    Succeeded,
    Canceled,
    /// One this client does not know: not settled, as far as it can tell.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct PaymentError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Refund {
    id: String,
    status: String,
}

impl Refund {
    fn reading(self) -> RefundReading {
        let state = match self.status.as_str() {
            "succeeded" => refunds::Answer::Succeeded,
            "failed" | "canceled" => refunds::Answer::Failed,
            // `pending`, `requires_action`, or one this client does not
            // know: not settled.
            _ => refunds::Answer::Pending,
        };
        RefundReading {
            reason: (state == refunds::Answer::Failed).then(|| format!("refund {}", self.status)),
            refund_id: Some(self.id),
            state,
        }
    }
}

#[derive(Debug, Deserialize)]
struct EventList {
    data: Vec<Event>,
    has_more: bool,
}

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: Seen,
}

/// An intent or a refund as an event shows it: what finding an intent by
/// its key needs.
#[derive(Debug, Deserialize)]
struct Seen {
    object: String,
    id: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
    /// A refund's intent.
    #[serde(default)]
    payment_intent: Option<String>,
}
