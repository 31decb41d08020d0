//! The books of a checkout run: reads the four service databases, the
//! payment provider's ledger (`/admin/ledger` of the emulator) and the
//! `DLQ` stream, and checks that the saga's invariants hold across them —
//! every order ended or is still within its deadline, a confirmed order was
//! paid once and its stock sold, a cancelled order keeps no money and holds
//! no stock, no money is held outside a confirmed order, each payment's
//! money is where the provider says, stock adds up, every settled order got
//! its one email, no outbox row was left behind and nothing was parked that
//! should not have been. See `ARCHITECTURE.md`, "Invariants".
//!
//! Run it after a fault run, once traffic has stopped, or on a live stack
//! (`cargo xtask verify`). Orders still in flight (not yet confirmed or
//! cancelled, and within `ORDER_DEADLINE`) are not held to their outcome.
//! The databases are read one after another, not in one snapshot, so on a
//! stack that is still busy an order settled a moment ago can show follow-up
//! work (a refund, a release, an email) not yet done; run it again once the
//! stack is quiet before trusting such a violation.
//!
//! A broken invariant is data, not an error: [`check`] returns a [`Report`]
//! listing each check, what it covered and every violation with the order
//! ids, payment ids, intents, SKUs or event ids involved. Errors are only
//! for what kept the books from being read (a database, the provider or
//! NATS that cannot be reached, a schema that is not the shop's).

mod checks;
mod report;

use std::{collections::BTreeMap, time::Duration};

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use shop_provider::admin_client::AdminClient;
use shop_runtime::registry::{self, ServiceSpec};
use sqlx::PgPool;

pub use report::{Check, Report, Violation};

pub use svc_order::config::DEFAULT_ORDER_DEADLINE;

/// How long an outbox row may wait unpublished by default. The relay sends
/// a row milliseconds after its commit and sweeps up leftovers every
/// `OUTBOX_POLL_INTERVAL` (2 s), so a minute means it is stuck.
pub const DEFAULT_OUTBOX_MAX_AGE: Duration = Duration::from_secs(60);

/// The four service databases (each with its `outbox` and `inbox`).
#[derive(Debug, Clone)]
pub struct Databases {
    pub order: PgPool,
    pub inventory: PgPool,
    pub payment: PgPool,
    pub notify: PgPool,
}

impl Databases {
    /// Each database with the service that owns it, as the registry names
    /// it.
    pub fn each(&self) -> [(&'static ServiceSpec, &PgPool); 4] {
        [
            (&registry::ORDER, &self.order),
            (&registry::INVENTORY, &self.inventory),
            (&registry::PAYMENT, &self.payment),
            (&registry::NOTIFY, &self.notify),
        ]
    }
}

/// What the books are checked against.
#[derive(Debug, Clone)]
pub struct Options {
    /// The moment deadlines and ages are measured to.
    pub now: DateTime<Utc>,
    /// svc-order's `ORDER_DEADLINE`: an order neither confirmed nor
    /// cancelled this long after it was placed should have been timed out.
    pub order_deadline: Duration,
    /// An outbox row unpublished for longer than this is a violation.
    pub outbox_max_age: Duration,
    /// `stock.on_hand` per SKU before the run, when the run recorded it: each
    /// listed SKU must then have `initial - units sold` on hand. (Restocking
    /// during the run breaks this; leave it `None` then.)
    pub initial_on_hand: Option<BTreeMap<String, i64>>,
    /// Original subjects (NATS wildcards allowed) of the poison messages the
    /// run injected on purpose. Every parked message must match one, and
    /// each must match at least one parked message (a poison message is
    /// parked once by every consumer that reads it).
    pub expected_parked: Vec<String>,
}

impl Options {
    /// The defaults, measured to `now`: the default deadline and outbox age,
    /// no initial stock, no poison expected.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now,
            order_deadline: DEFAULT_ORDER_DEADLINE,
            outbox_max_age: DEFAULT_OUTBOX_MAX_AGE,
            initial_on_hand: None,
            expected_parked: Vec::new(),
        }
    }
}

/// Reads the books and checks every invariant, the money where the
/// `provider`'s ledger has it; the DLQ only when `jetstream` is given
/// (otherwise the report lists that check as skipped).
pub async fn check(
    dbs: &Databases,
    provider: &AdminClient,
    jetstream: Option<&jetstream::Context>,
    options: &Options,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    report.checks.push(checks::every_order_ends(&dbs.order, options).await?);
    report
        .checks
        .push(checks::confirmed_orders_are_paid_and_sold(dbs).await?);
    report
        .checks
        .push(checks::cancelled_orders_keep_nothing(dbs, provider).await?);
    report
        .checks
        .push(checks::money_is_taken_only_for_confirmed_orders(dbs, provider, options).await?);
    report
        .checks
        .push(checks::payments_match_the_provider(dbs, provider).await?);
    report
        .checks
        .push(checks::stock_adds_up(&dbs.inventory, options).await?);
    report.checks.push(checks::settled_orders_have_their_email(dbs).await?);
    report.checks.push(checks::outboxes_are_drained(dbs, options).await?);
    match jetstream {
        Some(js) => report
            .checks
            .push(checks::dlq_holds_only_expected_poison(js, options).await?),
        None => report.skipped.push(format!(
            "{} (no NATS connection given)",
            checks::DLQ_HOLDS_ONLY_EXPECTED_POISON
        )),
    }
    Ok(report)
}
