//! The provider's engine: each command takes the one lock, asks the domain
//! what happens, writes the journal, applies the record to the book and
//! then starts what follows (a settlement timer, a webhook). The HTTP
//! handlers and the timers only call these commands.

use std::{path::Path, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::sync::Mutex;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    book::{Book, Change, KeyUse, Record, UnknownEvent},
    domain::{
        self, Decision, Event, EventData, EventType, Input, Intent, LedgerLine, NewIntent, NewRefund, Object, Refund,
        RefundStatus, Refusal, Status,
    },
    faults::{self, Knobs},
    journal::{Journal, JournalError},
    webhooks::{self, Webhooks},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("no such {kind}: {id}")]
    NotFound { kind: &'static str, id: String },
    /// The idempotency key was used for a different call.
    #[error("the idempotency key {key:?} was used for a different request")]
    KeyReused { key: String },
    /// A field of the request names an object that does not exist.
    #[error("no such {param}: {id}")]
    UnknownReference { param: &'static str, id: String },
    #[error("{}", .0.message)]
    Refused(Refusal),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A command's answer; `fresh` when this call acted, `false` when its
/// idempotency key had been answered before.
#[derive(Debug)]
pub(crate) struct Answer<T> {
    pub object: T,
    pub fresh: bool,
}

struct Inner {
    book: Book,
    journal: Journal,
}

/// What the engine needs from the settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The base of the links handed out, without a trailing slash.
    pub public_url: String,
    /// How long `processing` lasts and a refund stays `pending`.
    pub async_delay: Duration,
}

pub(crate) struct Provider {
    inner: Mutex<Inner>,
    settings: Settings,
    /// `None`: no webhook URL configured.
    pub(crate) webhooks: Option<Webhooks>,
    pub(crate) faults: Knobs,
    /// The timers and webhook deliveries in flight: `run` waits for them
    /// (they stop on `shutdown`) so that nothing writes after it returns.
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// Now, in the API's unit (Unix seconds).
pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn fingerprint(endpoint: &str, body: &impl Serialize) -> String {
    // The validated body: fields in a fixed order, metadata sorted.
    format!(
        "{endpoint}|{}",
        serde_json::to_string(body).unwrap_or_else(|e| format!("unencodable: {e}"))
    )
}

fn event(kind: EventType, object: Object, created: i64) -> Event {
    Event {
        id: domain::new_id("evt"),
        kind,
        created,
        data: EventData { object },
    }
}

impl Provider {
    /// Replays the journal in `data_dir`.
    pub(crate) fn open(
        data_dir: &Path,
        settings: Settings,
        webhooks: Option<Webhooks>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, JournalError> {
        let (journal, records) = Journal::open::<Record>(data_dir)?;
        let book = Book::replay(records);
        tracing::info!(
            data_dir = %data_dir.display(),
            intents = book.intents().count(),
            "payment provider state replayed"
        );
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner { book, journal }),
            settings,
            webhooks,
            faults: Knobs::default(),
            tasks: TaskTracker::new(),
            shutdown,
        }))
    }

    /// Starts again what a stop interrupted: the settlement of every
    /// `processing` intent and `pending` refund, and every webhook owed.
    pub(crate) async fn resume(self: &Arc<Self>) {
        let inner = self.inner.lock().await;
        for event in inner.book.owed() {
            self.deliver(event.clone(), None);
        }
        for intent in inner.book.intents().filter(|i| i.status == Status::Processing) {
            self.settle_later(intent);
        }
        for refund in inner.book.refunds().filter(|r| r.status == RefundStatus::Pending) {
            self.settle_refund_later(refund);
        }
    }

    /// `POST /v1/payment_intents`.
    pub(crate) async fn create_intent(
        self: &Arc<Self>,
        key: &str,
        new: NewIntent,
    ) -> Result<Answer<Intent>, CommandError> {
        let fingerprint = fingerprint("POST /v1/payment_intents", &new);
        let mut inner = self.inner.lock().await;
        if let Some(used) = inner.book.key(key) {
            if used.fingerprint != fingerprint {
                return Err(CommandError::KeyReused { key: key.to_owned() });
            }
            let intent = found(inner.book.intent(&used.answer), "payment_intent", &used.answer)?;
            return Ok(Answer {
                object: intent,
                fresh: false,
            });
        }
        let id = domain::new_id("pi");
        let created = now();
        let authenticate_url = format!("{}/authenticate/{id}", self.settings.public_url);
        let intent = Intent::open(id.clone(), created, new, authenticate_url);
        let change = Change {
            event: event(intent.status.event(), Object::PaymentIntent(intent.clone()), created),
            intent: intent.clone(),
            refund: None,
            key: Some(KeyUse {
                key: key.to_owned(),
                fingerprint,
                answer: id,
            }),
        };
        self.commit(&mut inner, change).await?;
        Ok(Answer {
            object: intent,
            fresh: true,
        })
    }

    /// Cancels, authenticates or settles an intent, as [`domain::decide`]
    /// says.
    pub(crate) async fn move_intent(self: &Arc<Self>, id: &str, input: Input) -> Result<Intent, CommandError> {
        let mut inner = self.inner.lock().await;
        let intent = found(inner.book.intent(id), "payment_intent", id)?;
        match domain::decide(intent.status, input) {
            Decision::Move { to, failure } => {
                let moved = intent.moved(to, failure);
                let change = Change {
                    event: event(to.event(), Object::PaymentIntent(moved.clone()), now()),
                    intent: moved.clone(),
                    refund: None,
                    key: None,
                };
                self.commit(&mut inner, change).await?;
                Ok(moved)
            }
            Decision::Ignore => Ok(intent),
            Decision::Refuse(refusal) => Err(CommandError::Refused(refusal)),
        }
    }

    /// `POST /v1/refunds`.
    pub(crate) async fn create_refund(
        self: &Arc<Self>,
        key: &str,
        new: NewRefund,
    ) -> Result<Answer<Refund>, CommandError> {
        let fingerprint = fingerprint("POST /v1/refunds", &new);
        let mut inner = self.inner.lock().await;
        if let Some(used) = inner.book.key(key) {
            if used.fingerprint != fingerprint {
                return Err(CommandError::KeyReused { key: key.to_owned() });
            }
            let refund = found(inner.book.refund(&used.answer), "refund", &used.answer)?;
            return Ok(Answer {
                object: refund,
                fresh: false,
            });
        }
        let intent = inner
            .book
            .intent(&new.payment_intent)
            .cloned()
            .ok_or_else(|| CommandError::UnknownReference {
                param: "payment_intent",
                id: new.payment_intent.clone(),
            })?;
        let amount = domain::decide_refund(&intent, new.amount).map_err(CommandError::Refused)?;
        let created = now();
        let refund = Refund {
            id: domain::new_id("re"),
            payment_intent: intent.id.clone(),
            amount,
            currency: intent.currency.clone(),
            status: RefundStatus::Pending,
            created,
        };
        let change = Change {
            intent: Intent {
                amount_refunded: intent.amount_refunded + amount,
                ..intent
            },
            refund: Some(refund.clone()),
            event: event(EventType::RefundCreated, Object::Refund(refund.clone()), created),
            key: Some(KeyUse {
                key: key.to_owned(),
                fingerprint,
                answer: refund.id.clone(),
            }),
        };
        self.commit(&mut inner, change).await?;
        Ok(Answer {
            object: refund,
            fresh: true,
        })
    }

    /// A pending refund's money has reached the customer, or (`failed`)
    /// came back: then what is left to refund grows by it again.
    async fn settle_refund(self: &Arc<Self>, id: &str, failed: bool) -> Result<Refund, CommandError> {
        let mut inner = self.inner.lock().await;
        let refund = found(inner.book.refund(id), "refund", id)?;
        let Some(status) = domain::settle_refund(refund.status, failed) else {
            return Ok(refund);
        };
        let mut intent = found(
            inner.book.intent(&refund.payment_intent),
            "payment_intent",
            &refund.payment_intent,
        )?;
        if status == RefundStatus::Failed {
            intent.amount_refunded -= refund.amount;
        }
        let settled = Refund { status, ..refund };
        let change = Change {
            intent,
            refund: Some(settled.clone()),
            event: event(EventType::RefundUpdated, Object::Refund(settled.clone()), now()),
            key: None,
        };
        self.commit(&mut inner, change).await?;
        Ok(settled)
    }

    pub(crate) async fn refund(&self, id: &str) -> Result<Refund, CommandError> {
        found(self.inner.lock().await.book.refund(id), "refund", id)
    }

    /// Up to `limit` events after `after` (from the first when `None`), and
    /// whether more follow.
    pub(crate) async fn events(&self, after: Option<&str>, limit: usize) -> Result<(Vec<Event>, bool), CommandError> {
        self.inner
            .lock()
            .await
            .book
            .events_after(after, limit)
            .map_err(|UnknownEvent| CommandError::UnknownReference {
                param: "after",
                id: after.unwrap_or_default().to_owned(),
            })
    }

    pub(crate) async fn intent(&self, id: &str) -> Result<Intent, CommandError> {
        found(self.inner.lock().await.book.intent(id), "payment_intent", id)
    }

    pub(crate) async fn ledger(&self) -> Vec<LedgerLine> {
        self.inner.lock().await.book.ledger()
    }

    /// Writes the change, applies it, and starts what follows from it.
    async fn commit(self: &Arc<Self>, inner: &mut Inner, change: Change) -> Result<(), JournalError> {
        let record = Record::Changed(Box::new(change));
        inner.journal.append(&record).await?;
        inner.book.apply(&record);
        let Record::Changed(change) = record else {
            return Ok(());
        };
        tracing::info!(
            intent = %change.intent.id,
            status = ?change.intent.status,
            refund = change.refund.as_ref().map(|r| r.id.as_str()),
            event = %change.event.id,
            kind = ?change.event.kind,
            "payment provider state changed"
        );
        self.deliver(change.event.clone(), None);
        match (change.event.kind, &change.refund) {
            (EventType::PaymentIntentProcessing, _) => self.settle_later(&change.intent),
            (EventType::RefundCreated, Some(refund)) => self.settle_refund_later(refund),
            _ => {}
        }
        Ok(())
    }

    /// After the async delay, settles `intent` as its card says, unless it
    /// has moved on (a cancel) meanwhile.
    fn settle_later(self: &Arc<Self>, intent: &Intent) {
        let (this, id, settlement) = (self.clone(), intent.id.clone(), intent.payment_method.settlement());
        self.after(self.settings.async_delay, async move {
            if let Err(e) = this.move_intent(&id, Input::Settled(settlement)).await {
                tracing::error!(intent = %id, error = %e, "cannot settle a processing payment intent");
            }
        });
    }

    /// Sends `event`'s webhook in a task of its own until delivered or the
    /// horizon, counted from the event or from `resent_at`.
    fn deliver(self: &Arc<Self>, event: Event, resent_at: Option<i64>) {
        let Some(hooks) = &self.webhooks else {
            return;
        };
        let horizon = i64::try_from(hooks.horizon.as_secs()).unwrap_or(i64::MAX);
        let deadline = resent_at.unwrap_or(event.created).saturating_add(horizon);
        self.tasks.spawn(webhooks::deliver(self.clone(), event, deadline));
    }

    /// Records that `event`'s webhook was delivered (or given up), if it
    /// was still owed.
    pub(crate) async fn webhook_settled(&self, event: &str, delivered: bool) {
        let mut inner = self.inner.lock().await;
        if !inner.book.is_owed(event) {
            return;
        }
        let event = event.to_owned();
        let record = if delivered {
            Record::Delivered { event }
        } else {
            Record::GaveUp { event }
        };
        match inner.journal.append(&record).await {
            Ok(()) => inner.book.apply(&record),
            // Still owed: sent again after a restart.
            Err(e) => tracing::error!(error = %e, "cannot record a webhook's delivery"),
        }
    }

    /// Sends event `id`'s webhook again, whether it was delivered or not.
    pub(crate) async fn resend(self: &Arc<Self>, id: &str) -> Result<(), CommandError> {
        let event = found(self.inner.lock().await.book.event(id), "event", id)?;
        self.deliver(event, Some(now()));
        Ok(())
    }

    /// After the async delay, the refund succeeds, or fails as often as
    /// the `refunds_fail` knob then says.
    fn settle_refund_later(self: &Arc<Self>, refund: &Refund) {
        let (this, id) = (self.clone(), refund.id.clone());
        self.after(self.settings.async_delay, async move {
            let failed = faults::chance(this.faults.get().refunds_fail);
            if let Err(e) = this.settle_refund(&id, failed).await {
                tracing::error!(refund = %id, error = %e, "cannot settle a pending refund");
            }
        });
    }

    /// Runs `task` after `delay`, unless the provider stops first.
    fn after(&self, delay: Duration, task: impl Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => task.await,
                () = shutdown.cancelled() => {}
            }
        });
    }
}

fn found<T: Clone>(object: Option<&T>, kind: &'static str, id: &str) -> Result<T, CommandError> {
    object.cloned().ok_or_else(|| CommandError::NotFound {
        kind,
        id: id.to_owned(),
    })
}
