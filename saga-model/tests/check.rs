//! The checker over the CI configuration: every safety and liveness
//! property holds, every outcome is reachable, and each known-wrong rule
//! is caught with a counterexample.

use std::time::Instant;

use saga_model::{Card, Config, Mutation, Scope, Shop, properties, trace};
use stateright::{Checker, Expectation, HasDiscoveries, Model};

fn check(config: Config, until: HasDiscoveries) -> impl Checker<Shop> {
    let began = Instant::now();
    let checker = Shop::new(config)
        .checker()
        .threads(2)
        .finish_when(until)
        .spawn_bfs()
        .join();
    eprintln!(
        "{} states, {} unique, depth {}, in {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        began.elapsed().as_secs_f64()
    );
    checker
}

#[test]
fn the_saga_keeps_every_property() {
    let checker = check(Config::ci(), HasDiscoveries::All);
    let shop = checker.model();
    let mut broken = Vec::new();
    for property in shop.properties() {
        let found = checker.discovery(property.name);
        match (property.expectation, found) {
            (Expectation::Always | Expectation::Eventually, Some(path)) => {
                broken.push(format!("{}:\n{}", property.name, trace::render(shop, path)));
            }
            (Expectation::Sometimes, None) => broken.push(format!("never reached: {}", property.name)),
            _ => {}
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// `config` with `mutation` breaks `property`.
fn counterexample_in(config: Config, mutation: Mutation, property: &'static str) {
    let checker = check(
        config.with(mutation),
        HasDiscoveries::AnyOf([property].into_iter().collect()),
    );
    let path = checker
        .discovery(property)
        .unwrap_or_else(|| panic!("{mutation:?} must break {property:?}"));
    eprintln!(
        "{mutation:?} breaks {property:?}:\n{}",
        trace::render(checker.model(), path)
    );
}

fn counterexample(mutation: Mutation, property: &'static str) {
    counterexample_in(Config::ci(), mutation, property);
}

#[test]
fn confirming_on_payment_confirms_stock_not_yet_sold() {
    counterexample(
        Mutation::ConfirmOnPaymentSucceeded,
        properties::CONFIRMED_IS_PAID_AND_SOLD,
    );
}

#[test]
fn releasing_without_the_lock_loses_track_of_units() {
    counterexample(Mutation::ReleaseWithoutLock, properties::STOCK_ADDS_UP);
}

#[test]
fn charging_after_a_void_captures_twice() {
    counterexample(Mutation::ChargeAfterVoid, properties::ONE_CAPTURE);
}

/// A charge that waits, its `inventory.reserved` delivered again: the
/// cards that wait, with duplicates.
#[test]
fn charging_again_while_a_charge_waits_captures_twice() {
    let duplicates = Scope {
        duplicates: true,
        ..Scope::WEBHOOKS
    };
    let config = Config {
        cards: vec![(Card::ThreeDs, duplicates), (Card::Async, duplicates)],
        ..Config::ci()
    };
    counterexample_in(config, Mutation::ChargeWhileAwaiting, properties::ONE_CAPTURE);
}

/// Two refunds of one confirmed order.
#[test]
fn refunding_beyond_what_is_left_gives_back_more_than_was_captured() {
    let config = Config {
        cards: vec![(Card::Ok, Scope::FAULTS)],
        refunds: 2,
        ..Config::ci()
    };
    counterexample_in(
        config,
        Mutation::RefundBeyondWhatIsLeft,
        properties::REFUNDS_WITHIN_CAPTURE,
    );
}
