//! The consumers the services run and the ones `nats/consumers/` declares
//! are the same set: a file nobody handles, a handler without its file, or
//! two services sharing one durable all fail here.

use std::collections::{BTreeMap, BTreeSet};

#[test]
fn every_declared_consumer_has_one_service_and_every_service_consumer_its_file() {
    let mut handled: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (service, consumers) in [
        ("svc-order", svc_order::CONSUMERS),
        ("svc-inventory", svc_inventory::CONSUMERS),
        ("svc-payment", svc_payment::CONSUMERS),
        ("svc-notify", svc_notify::CONSUMERS),
        ("svc-cart", svc_cart::CONSUMERS),
    ] {
        for consumer in consumers {
            handled.entry(consumer).or_default().push(service);
        }
    }
    for (consumer, services) in &handled {
        assert_eq!(services.len(), 1, "{consumer} is run by {services:?}");
    }
    let declared: BTreeSet<String> = shop_runtime::topology::consumers()
        .expect("nats/consumers parses")
        .iter()
        .map(|d| d.name().to_owned())
        .collect();
    let handled: BTreeSet<String> = handled.keys().map(|c| (*c).to_owned()).collect();
    assert_eq!(
        handled, declared,
        "run by a service (left), declared in nats/consumers (right)"
    );
}
