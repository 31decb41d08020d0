//! `HttpProvider` against the real payment provider emulator
//! (`shop-provider`), run in this process on a free port with a data
//! directory of its own: each test card, the fault knobs, voids and refunds,
//! checked in the emulator's ledger (where the money is).

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Url;
use shop_provider::{
    Faults,
    domain::{LedgerLine, Status},
};
use shop_runtime::values::{Currency, Money};
use svc_payment::{
    domain::{Standing, Wait},
    provider::{ChargeOutcome, HttpProvider, PaymentProvider, ProviderError, ProviderRecords},
};
use tokio::net::TcpListener;
use uuid::Uuid;

/// Each provider call's deadline in these tests.
const DEADLINE: Duration = Duration::from_secs(2);

/// Upper bound of every wait: generous for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// The emulator, in this process, with a data directory of its own.
struct Emulator(shop_harness::provider::Emulator);

impl Emulator {
    /// An emulator whose `processing` intents and `pending` refunds settle
    /// after `async_delay`.
    async fn start(async_delay: Duration) -> anyhow::Result<Self> {
        Ok(Self(shop_harness::provider::Emulator::alone(async_delay).await?))
    }

    /// A client of it, as svc-payment makes one (no memory of earlier
    /// calls: another replica, or one restarted).
    fn provider(&self) -> anyhow::Result<HttpProvider> {
        Ok(HttpProvider::new(Url::parse(self.0.url())?, DEADLINE)?)
    }

    /// Sets every fault knob (`Faults::default()`: all off).
    async fn faults(&self, knobs: Faults) -> anyhow::Result<()> {
        self.0.set_faults(&knobs).await
    }

    /// The ledger: one line per intent, oldest first.
    async fn ledger(&self) -> anyhow::Result<Vec<LedgerLine>> {
        self.0.ledger().await
    }

    /// The ledger's only line; fails if there is none or more.
    async fn only_line(&self) -> anyhow::Result<LedgerLine> {
        match self.ledger().await?.as_slice() {
            [line] => Ok(line.clone()),
            lines => bail!("one intent expected, the ledger has {lines:?}"),
        }
    }

    /// Polls the ledger (bounded) until its only line satisfies `done`.
    async fn line_until(&self, what: &str, done: impl Fn(&LedgerLine) -> bool) -> anyhow::Result<LedgerLine> {
        let started = tokio::time::Instant::now();
        loop {
            let line = self.only_line().await?;
            if done(&line) {
                return Ok(line);
            }
            if started.elapsed() > PATIENCE {
                bail!("the ledger never showed {what}: {line:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Every knob off but `lose_answers`: every answer to a POST lost.
fn lose_every_answer() -> Faults {
    Faults {
        lose_answers: 1.0,
        ..Faults::default()
    }
}

fn eur(minor: i64) -> Money {
    Money::new(Currency::parse("EUR").expect("a currency"), minor)
}

const ORDER: &str = "01a00000-0000-7000-8000-00000000000a";

async fn charge(provider: &HttpProvider, key: Uuid, card: &str) -> Result<ChargeOutcome, ProviderError> {
    provider.charge(key, ORDER, eur(1299), card).await
}

fn charge_id(outcome: Result<ChargeOutcome, ProviderError>) -> anyhow::Result<String> {
    match outcome {
        Ok(ChargeOutcome::Succeeded { charge_id }) => Ok(charge_id),
        other => bail!("a success expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_good_card_is_captured_once_however_often_it_is_charged() -> anyhow::Result<()> {
    let emulator = Emulator::start(Duration::from_secs(3)).await?;
    let provider = emulator.provider()?;
    let key = Uuid::now_v7();

    let first = charge_id(charge(&provider, key, "pm_card_ok").await)?;
    let again = charge_id(charge(&provider, key, "pm_card_ok").await)?;
    assert_eq!(first, again, "the same key is the same charge");

    let line = emulator.only_line().await?;
    assert_eq!(line.intent, first);
    assert_eq!(line.captured, 1299);
    assert_eq!(line.currency, "eur");
    assert_eq!(
        line.order_id.as_deref(),
        Some(ORDER),
        "the order is recorded with the charge"
    );
    Ok(())
}

#[tokio::test]
async fn a_declined_card_is_a_decline_with_its_reason_and_takes_nothing() -> anyhow::Result<()> {
    let emulator = Emulator::start(Duration::from_secs(3)).await?;
    let provider = emulator.provider()?;

    let declined = charge(&provider, Uuid::now_v7(), "pm_card_declined").await;
    assert!(
        matches!(&declined, Ok(ChargeOutcome::Declined { reason }) if reason == "card_declined"),
        "{declined:?}"
    );
    // A payment method the provider does not take is refused for good.
    let unknown = charge(&provider, Uuid::now_v7(), "pm_card_stolen").await;
    assert!(matches!(unknown, Ok(ChargeOutcome::Declined { .. })), "{unknown:?}");

    let line = emulator.only_line().await?;
    assert_eq!(line.status, Status::RequiresPaymentMethod);
    assert_eq!(line.captured, 0);
    Ok(())
}

/// `processing` is not an outcome: the charge reads the intent again until
/// it settles, within its deadline.
/// A charge the provider settles later answers at once that it waits; what
/// it became is read from the provider's records.
#[tokio::test]
async fn a_processing_charge_answers_awaiting_and_its_outcome_is_read_later() -> anyhow::Result<()> {
    let emulator = Emulator::start(Duration::from_millis(300)).await?;
    let provider = emulator.provider()?;

    let mut outcomes = Vec::new();
    for card in ["pm_card_async", "pm_card_async_declined"] {
        let waiting = charge(&provider, Uuid::now_v7(), card).await;
        let Ok(ChargeOutcome::Awaiting {
            charge_id,
            next_action_url: None,
        }) = waiting
        else {
            bail!("{card}: awaiting, with nothing for the customer to do, expected; got {waiting:?}");
        };
        let read = provider
            .read(&charge_id)
            .await?
            .context("the provider has the charge")?;
        assert_eq!(read.standing, Standing::Awaiting(Wait::Processing), "{card}");
        tokio::time::sleep(Duration::from_millis(600)).await;
        outcomes.push(provider.read(&charge_id).await?.context("still there")?);
    }
    assert_eq!(outcomes[0].standing, Standing::Captured, "{:?}", outcomes[0]);
    assert_eq!(outcomes[1].standing, Standing::NothingHeld, "{:?}", outcomes[1]);
    assert_eq!(outcomes[1].declined.as_deref(), Some("card_declined"));
    let captured: Vec<_> = emulator.ledger().await?.iter().map(|l| l.captured).collect();
    assert_eq!(captured, [1299, 0]);
    Ok(())
}

#[tokio::test]
async fn an_unsettled_charge_awaits_and_its_void_cancels_it() -> anyhow::Result<()> {
    // `processing` outlasts the test, and 3-D Secure waits for a person.
    let emulator = Emulator::start(Duration::from_secs(30)).await?;
    let provider = emulator.provider()?;

    for card in ["pm_card_async", "pm_card_3ds"] {
        let key = Uuid::now_v7();
        let unsettled = charge(&provider, key, card).await;
        let Ok(ChargeOutcome::Awaiting { next_action_url, .. }) = &unsettled else {
            bail!("{card}: awaiting expected, got {unsettled:?}");
        };
        assert_eq!(
            next_action_url.is_some(),
            card == "pm_card_3ds",
            "{card}: {unsettled:?}"
        );
        provider.refund_or_void(key).await?;
        provider.refund_or_void(key).await?;
        let voided = charge(&provider, key, card).await;
        assert!(
            matches!(&voided, Ok(ChargeOutcome::Declined { reason }) if reason == "canceled"),
            "a voided charge took nothing: {card}: {voided:?}"
        );
    }
    for line in emulator.ledger().await? {
        assert_eq!((line.status, line.voided, line.captured), (Status::Canceled, true, 0));
    }
    Ok(())
}

/// The `pm_card_timeout` card: the charge is made and its first answer lost.
#[tokio::test]
async fn a_lost_answer_is_a_timeout_and_the_retry_learns_the_one_charge() -> anyhow::Result<()> {
    let emulator = Emulator::start(Duration::from_secs(3)).await?;
    let provider = emulator.provider()?;
    let key = Uuid::now_v7();

    let lost = charge(&provider, key, "pm_card_timeout").await;
    assert!(matches!(lost, Err(ProviderError::Timeout)), "{lost:?}");
    let retried = charge_id(charge(&provider, key, "pm_card_timeout").await)?;

    let line = emulator.only_line().await?;
    assert_eq!(line.intent, retried);
    assert_eq!(line.captured, 1299, "charged once");
    Ok(())
}

/// Lost and late answers came after the provider acted: a timeout (may
/// have charged), never "unavailable" (charged nothing).
#[tokio::test]
async fn lost_and_late_answers_are_timeouts_and_the_retry_charges_nothing_more() -> anyhow::Result<()> {
    let emulator = Emulator::start(Duration::from_secs(3)).await?;
    let provider = emulator.provider()?;

    for (knobs, fault) in [
        (lose_every_answer(), "lost answer"),
        (
            Faults {
                slow_ms: 2 * u64::try_from(DEADLINE.as_millis())?,
                ..Faults::default()
            },
            "late answer",
        ),
    ] {
        let key = Uuid::now_v7();
        emulator.faults(knobs).await?;
        let answer = charge(&provider, key, "pm_card_ok").await;
        assert!(matches!(answer, Err(ProviderError::Timeout)), "{fault}: {answer:?}");
        emulator.faults(Faults::default()).await?;
        let id = charge_id(charge(&provider, key, "pm_card_ok").await)?;
        let charged: Vec<_> = emulator
            .ledger()
            .await?
            .into_iter()
            .filter(|l| l.intent == id)
            .collect();
        assert_eq!(charged.len(), 1, "{fault}");
        assert_eq!(charged[0].captured, 1299, "{fault}: charged once");
    }
    assert_eq!(emulator.ledger().await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn an_outage_or_no_provider_is_unavailable_and_charges_nothing() -> anyhow::Result<()> {
    let emulator = Emulator::start(Duration::from_secs(3)).await?;
    let provider = emulator.provider()?;
    let key = Uuid::now_v7();

    emulator.faults(Faults::outage()).await?;
    let down = charge(&provider, key, "pm_card_ok").await;
    assert!(matches!(down, Err(ProviderError::Unavailable(_))), "{down:?}");
    let void = provider.refund_or_void(key).await;
    assert!(matches!(void, Err(ProviderError::Unavailable(_))), "{void:?}");
    assert!(emulator.ledger().await?.is_empty(), "nothing charged");

    // Nothing listening: the connection is refused.
    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let nowhere = HttpProvider::new(Url::parse(&format!("http://127.0.0.1:{port}"))?, DEADLINE)?;
    let refused = charge(&nowhere, key, "pm_card_ok").await;
    assert!(matches!(refused, Err(ProviderError::Unavailable(_))), "{refused:?}");

    // Back: the same key charges, once.
    emulator.faults(Faults::default()).await?;
    charge_id(charge(&provider, key, "pm_card_ok").await)?;
    assert_eq!(emulator.only_line().await?.captured, 1299);
    Ok(())
}

#[tokio::test]
async fn a_void_refunds_a_captured_charge_once() -> anyhow::Result<()> {
    let emulator = Emulator::start(Duration::from_millis(300)).await?;
    let provider = emulator.provider()?;
    let key = Uuid::now_v7();
    charge_id(charge(&provider, key, "pm_card_ok").await)?;

    provider.refund_or_void(key).await?;
    // Repeated, by this client and by one that never charged (the lookup
    // by key): still one refund.
    provider.refund_or_void(key).await?;
    emulator.provider()?.refund_or_void(key).await?;

    let line = emulator
        .line_until("the refund settled", |l| l.refund_pending == 0)
        .await?;
    assert_eq!((line.captured, line.refunded), (1299, 1299));
    provider.refund_or_void(key).await?;
    assert_eq!(emulator.only_line().await?.refunded, 1299);
    Ok(())
}

/// An answer lost after the charge was made leaves the client without the
/// intent's id; the void finds the intent by its key in the event list.
#[tokio::test]
async fn a_void_finds_a_charge_whose_answer_was_lost() -> anyhow::Result<()> {
    let emulator = Emulator::start(Duration::from_millis(300)).await?;
    let key = Uuid::now_v7();
    // Other intents, before and after, for the lookup to pass over.
    charge_id(charge(&emulator.provider()?, Uuid::now_v7(), "pm_card_ok").await)?;
    emulator.faults(lose_every_answer()).await?;
    let lost = charge(&emulator.provider()?, key, "pm_card_ok").await;
    assert!(matches!(lost, Err(ProviderError::Timeout)), "{lost:?}");
    emulator.faults(Faults::default()).await?;
    charge_id(charge(&emulator.provider()?, Uuid::now_v7(), "pm_card_ok").await)?;

    emulator.provider()?.refund_or_void(key).await?;

    let ledger = emulator.ledger().await?;
    let refunded: Vec<_> = ledger.iter().map(|l| l.refunded + l.refund_pending).collect();
    assert_eq!(refunded, [0, 1299, 0], "exactly the lost charge is refunded");
    Ok(())
}

/// No intent under the key: only a charge already in flight could still
/// make one, so the void is unsettled until such a call would have ended,
/// then done, having made nothing.
#[tokio::test]
async fn a_void_of_a_key_never_charged_is_done_once_no_charge_can_be_in_flight() -> anyhow::Result<()> {
    let emulator = Emulator::start(Duration::from_secs(3)).await?;
    let provider = emulator.provider()?;
    let key = Uuid::now_v7();

    let started = tokio::time::Instant::now();
    let first = provider.refund_or_void(key).await;
    assert!(matches!(first, Err(ProviderError::Timeout)), "{first:?}");
    loop {
        match provider.refund_or_void(key).await {
            Ok(()) => break,
            Err(ProviderError::Timeout) if started.elapsed() < PATIENCE => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => bail!("the void never settled: {other:?}"),
        }
    }
    assert!(
        started.elapsed() >= DEADLINE,
        "not before a charge in flight would have ended"
    );
    assert!(emulator.ledger().await?.is_empty(), "the void made nothing");
    Ok(())
}
